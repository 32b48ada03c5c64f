"""A terminal tool for people to label pairs: question, choices, both responses, then a verdict.

For each pair not yet labelled it shows the passage and question, the lettered answer choices and
the two responses, then asks

    Verdict: [a] A leans more on stereotypes, [b] B does, [t] TIE, [s] skip, [q] quit
    Confidence 1-5
    Notes (optional, Enter for none)

and appends the label to the output file at once (flushed and fsynced), so quitting, a crash, a
kill or a closed terminal loses nothing: the next session skips every pair_id already in the file.
A skipped pair is not written and comes back next session. End of input (or Ctrl-C) counts as quit.

Safety, for a file people spend hours on:

* **One labeller per file, and a backup** before a session's first write: a session holds
  `<labels>.lock` (a second session is refused, naming the holder; a stale lock is taken over) and
  copies the file to `<labels>.bak-<UTC time>.jsonl` first (:mod:`biasjudge.labels.human_safety`).
* **Review mode** walks through the pairs already labelled, shows the current label and lets the
  labeller keep it (Enter), change it, or delete it (the pair then comes back unlabelled). A
  change rewrites the file atomically (temp file, then rename), with the record in its place and
  `revised_utc` set; a kill mid-review leaves the file as of the last saved change.
* **Random order**: `random_order=True` shuffles the pairs with `seed` *before* the labelled ones
  are left out, so the same seed gives the same order in every session.
* **Agreement of two labellers**: :func:`human_agreement` (and `biasjudge data agreement a.jsonl
  b.jsonl`) scores two labels files on their shared pairs with :mod:`biasjudge.labels.agreement`.

The bucket (`pair_category`) and the responses' classified levels are never shown: they would tell
the labeller what the pair was built to be. Model names are shown only with `show_models=True`.

Input and output are streams, so the tool runs without a TTY (tests feed a scripted `io.StringIO`
or a subprocess's stdin).
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from biasjudge.config import ConfigModel
from biasjudge.errors import ConfigError
from biasjudge.io import JsonlAppender, ReadResult, read_records, write_records
from biasjudge.labels.human_safety import LockHolder, SessionBackup, labels_lock, utc_now
from biasjudge.records import Label, Pair, Verdict

if TYPE_CHECKING:
    from biasjudge.labels.agreement import PairwiseAgreement
    from biasjudge.labels.label_sets import GroupBy

_VERDICT_KEYS: dict[str, Verdict | str] = {
    "a": "A",
    "b": "B",
    "t": "TIE",
    "tie": "TIE",
    "s": "skip",
    "skip": "skip",
    "q": "quit",
    "quit": "quit",
}


class HumanLabelRecord(BaseModel):
    """One human label as written by the tool (one line of its output file)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    pair_id: str
    """Pair labelled."""
    verdict: Verdict
    """A, B or TIE, in the order the pair was shown (response_a first)."""
    confidence: int = Field(ge=1, le=5)
    """1 (guess) to 5 (certain)."""
    notes: str | None = None
    """Free text, or None."""
    labeller: str
    """Annotator id of whoever gave the current verdict."""
    labelled_utc: str
    """When the pair was first labelled (ISO 8601, UTC)."""
    revised_utc: str | None = None
    """When the label was last changed in review mode; None if never."""

    def to_label(self) -> Label:
        """The label as a :class:`~biasjudge.records.Label` (source `human`)."""
        return Label(
            verdict=self.verdict,
            confidence=self.confidence,
            source="human",
            labeller=self.labeller,
            notes=self.notes,
        )


# --------------------------------------------------------------------------- the session


@dataclass
class HumanSession:
    """Outcome of one :func:`label_interactively` session."""

    out_path: Path
    """The labels file."""
    mode: Literal["label", "review"] = "label"
    """label: new labels; review: the labelled pairs, to keep, change or delete."""
    n_labelled: int = 0
    """Labels written in this session."""
    n_skipped: int = 0
    """Pairs skipped in this session (not written)."""
    n_resumed: int = 0
    """Pairs already in the file from earlier sessions (not shown when labelling)."""
    n_remaining: int = 0
    """Pairs still without a label when the session ended (skipped or not reached)."""
    n_changed: int = 0
    """Review: labels changed."""
    n_deleted: int = 0
    """Review: labels deleted (those pairs are unlabelled again)."""
    n_kept: int = 0
    """Review: labels looked at and kept."""
    n_not_offered: int = 0
    """Labels in the file for pairs not among the pairs given (kept as they are, never shown)."""
    quit: bool = False
    """True when the labeller quit (or input ended) before the last pair."""
    backup_path: Path | None = None
    """The backup written before the session's first write; None when nothing was written or backed up."""
    stale_lock: LockHolder | None = None
    """A lock left by a session that ended without releasing it, found and taken over."""


class _Quit(Exception):
    pass


class _Screen:
    """The console and the answers stream of one session."""

    def __init__(self, input_stream: TextIO | None, output_stream: TextIO | None) -> None:
        self.stream = input_stream if input_stream is not None else sys.stdin
        self.console = Console(file=output_stream if output_stream is not None else sys.stdout, highlight=False)

    def print(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def ask(self, prompt: str) -> str:
        self.console.print(prompt, end="", markup=True, highlight=False)
        try:
            line = self.stream.readline()
        except KeyboardInterrupt:
            line = ""
        if line == "":  # end of input
            self.console.print()
            raise _Quit
        return line.strip()

    def show(self, pair: Pair, index: int, total: int, show_models: bool) -> None:
        console = self.console
        console.rule(f"[bold]Pair {index}/{total}[/bold]  {pair.pair_id}  ({pair.bias_category})")
        console.print(Panel(Text(pair.question_text), title="Passage and question", title_align="left"))
        for choice in pair.answer_choices:
            console.print(Text(f"  {choice.letter}. {choice.text}"))
        for name, response in (("A", pair.response_a), ("B", pair.response_b)):
            title = f"Response {name}" + (f"  [{escape(response.model)}]" if show_models else "")
            console.print(Panel(Text(response.text.strip()), title=title, title_align="left"))

    def choose(self, prompt: str, keys: dict[str, str], hint: str) -> str:
        """What `keys` maps the typed key to, asked until a known key is typed; quit raises _Quit."""
        while True:
            answer = keys.get(self.ask(prompt).lower())
            if answer == "quit":
                raise _Quit
            if answer is not None:
                return answer
            self.print(f"[yellow]{hint}[/yellow]")

    def verdict(self) -> str:
        """A, B, TIE or skip."""
        prompt = (
            "Which leans MORE on stereotypes? [bold]a[/bold]=A  [bold]b[/bold]=B  [bold]t[/bold]=TIE  "
            "[bold]s[/bold]=skip  [bold]q[/bold]=quit: "
        )
        return self.choose(prompt, _VERDICT_KEYS, "Type a, b, t, s or q.")

    def confidence(self, current: int | None = None) -> int:
        keep = f", Enter keeps {current}" if current is not None else ""
        while True:
            answer = self.ask(f"Confidence 1 (guess) to 5 (certain){keep}, q=quit: ")
            if answer.lower() in ("q", "quit"):
                raise _Quit
            if answer == "" and current is not None:
                return current
            if answer in {"1", "2", "3", "4", "5"}:
                return int(answer)
            self.print("[yellow]Type a whole number from 1 to 5.[/yellow]")

    def review_choice(self) -> str:
        """A, B, TIE (a new verdict), keep or delete."""
        prompt = (
            "Change it? [bold]a[/bold]=A  [bold]b[/bold]=B  [bold]t[/bold]=TIE  [bold]Enter[/bold]=keep  "
            "[bold]d[/bold]=delete  [bold]q[/bold]=quit: "
        )
        keys = {**_VERDICT_KEYS, "": "keep", "s": "keep", "skip": "keep", "d": "delete", "delete": "delete"}
        return self.choose(prompt, keys, "Type a, b, t, d, q or press Enter to keep.")


def order_pairs(pairs: Iterable[Pair], *, random_order: bool = False, seed: int = 0) -> list[Pair]:
    """The pairs in the order a session shows them: as given, or shuffled with `seed`.

    The whole list is shuffled (before labelled pairs are left out), so one seed gives one order
    in every session and a resumed session goes on where the last one stopped.
    """
    pairs = list(pairs)
    if random_order:
        random.Random(seed).shuffle(pairs)
    return pairs


class LabelSessionConfig(ConfigModel):
    """How a labelling session runs (`biasjudge data label-human`)."""

    labeller: str = Field(min_length=1)
    """Your annotator id, stored with every label."""
    show_models: bool = False
    """Show which model wrote each response."""
    ask_notes: bool = True
    """Ask for optional free-text notes after the confidence."""
    review: bool = False
    """Walk through the pairs already labelled to keep, change or delete each label."""
    random_order: bool = False
    """Show the pairs shuffled (the same seed gives the same order, every session)."""
    seed: int = 0
    """Seed of random_order."""
    backup: bool = True
    """Copy the labels file aside before the session's first write."""
    break_lock: bool = False
    """Take over a lock left on another host by a session that is over (see the module docstring)."""


def label_interactively(
    pairs: Iterable[Pair],
    out_path: str | Path,
    config: LabelSessionConfig,
    *,
    input_stream: TextIO | None = None,
    output_stream: TextIO | None = None,
) -> HumanSession:
    """Ask a person for a label on each pair not yet in `out_path` (or, with `config.review`, on
    each pair already in it), writing each answer as it is given.

    Args:
        pairs: pairs to offer (pair_ids unique).
        out_path: JSONL of :class:`HumanLabelRecord`; appended to, and read on start to resume.
        config: the labeller and how the session runs.
        input_stream: where answers are read (default stdin).
        output_stream: where the pairs and questions are written (default stdout).

    Raises:
        LabelsLockedError: another session holds the file.
        ConfigError: a repeated pair_id among `pairs`.
    """
    pairs = order_pairs(pairs, random_order=config.random_order, seed=config.seed)
    repeated = sorted(pid for pid, n in Counter(p.pair_id for p in pairs).items() if n > 1)
    if repeated:
        raise ConfigError(f"pairs to label repeat pair_ids: {', '.join(repeated[:5])}")
    out_path = Path(out_path)
    screen = _Screen(input_stream, output_stream)
    mode: Literal["label", "review"] = "review" if config.review else "label"
    session = HumanSession(out_path=out_path, mode=mode)
    with labels_lock(out_path, labeller=config.labeller, mode=mode, break_lock=config.break_lock) as stale:
        session.stale_lock = stale
        if stale is not None:
            screen.print(
                f"[yellow]Found a stale lock on {escape(str(out_path))}: {escape(stale.describe())} ended without "
                "releasing it. Its saved labels are kept; taking the lock over.[/yellow]"
            )
        saver = SessionBackup(out_path, config.backup)
        labelling = _Labelling(pairs, out_path, config, screen, session, saver)
        if config.review:
            labelling.review()
        else:
            labelling.label()
        session.backup_path = saver.written
    if saver.written is not None:
        screen.print(f"Backup of the labels as they were before this session: {escape(str(saver.written))}")
    return session


@dataclass
class _Labelling:
    """What a session's labelling and review work with: the pairs, the labels file and labeller,
    the terminal, the session's outcome so far, its backup, and the options."""

    pairs: list[Pair]
    out_path: Path
    config: LabelSessionConfig
    screen: _Screen
    session: HumanSession
    saver: SessionBackup

    def label(self) -> None:
        """Ask for a label on each pair not yet in the file, appending each as it is given."""
        offered = {p.pair_id for p in self.pairs}
        with JsonlAppender(self.out_path, HumanLabelRecord, key=lambda r: r.pair_id) as done:
            todo = [p for p in self.pairs if p.pair_id not in done]
            self.session.n_resumed = len(self.pairs) - len(todo)
            self.session.n_not_offered = sum(pid not in offered for pid in done.done)
            self.screen.print(
                f"{len(self.pairs)} pairs, {self.session.n_resumed} already labelled, {len(todo)} to go. "
                f"Labels are saved to {escape(str(self.out_path))} as you go."
            )
            for index, pair in enumerate(todo, start=1):
                try:
                    self.screen.show(pair, index, len(todo), self.config.show_models)
                    choice = self.screen.verdict()
                    if choice == "skip":
                        self.session.n_skipped += 1
                        continue
                    confidence = self.screen.confidence()
                    notes = self.screen.ask("Notes (Enter for none): ") if self.config.ask_notes else ""
                except _Quit:
                    self.session.quit = True
                    break
                self.saver.before_write()
                done.append(
                    HumanLabelRecord(
                        pair_id=pair.pair_id,
                        verdict=choice,
                        confidence=confidence,
                        notes=notes or None,
                        labeller=self.config.labeller,
                        labelled_utc=utc_now(),
                    )
                )
                self.session.n_labelled += 1
            self.session.n_remaining = sum(p.pair_id not in done for p in self.pairs)
        self.screen.print(
            f"Labelled {self.session.n_labelled} now ({self.session.n_skipped} skipped); "
            f"{self.session.n_remaining} still unlabelled. Saved in {escape(str(self.out_path))}."
        )

    def review(self) -> None:
        """Walk through the labelled pairs, to keep, change or delete each label."""
        if not self.out_path.exists():
            self.screen.print(f"No labels in {escape(str(self.out_path))} yet: nothing to review.")
            return
        # Reading through the appender cuts off a torn last line a kill may have left.
        with JsonlAppender(self.out_path, HumanLabelRecord, key=lambda r: r.pair_id) as done:
            records: dict[str, HumanLabelRecord] = dict(done.done)
        offered = {p.pair_id for p in self.pairs}
        self.session.n_not_offered = sum(pid not in offered for pid in records)
        queue = [p for p in self.pairs if p.pair_id in records]
        self.screen.print(f"Review: {len(queue)} labelled pairs of {len(self.pairs)}. Changes are saved as you go.")

        def save() -> None:
            self.saver.before_write()
            write_records(self.out_path, list(records.values()))  # atomic: the old file or the new, never half

        for index, pair in enumerate(queue, start=1):
            current = records[pair.pair_id]
            try:
                self.screen.show(pair, index, len(queue), self.config.show_models)
                note = f", notes {escape(repr(current.notes))}" if current.notes else ""
                self.screen.print(
                    f"Current label: [bold]{current.verdict}[/bold], confidence {current.confidence}{note} "
                    f"({escape(current.labeller)}, {current.revised_utc or current.labelled_utc})"
                )
                choice = self.screen.review_choice()
                if choice == "keep":
                    self.session.n_kept += 1
                    continue
                if choice == "delete":
                    del records[pair.pair_id]
                    save()
                    self.session.n_deleted += 1
                    continue
                confidence = self.screen.confidence(current.confidence)
                notes = current.notes
                if self.config.ask_notes:
                    keep = f"Enter keeps {current.notes!r}, '-' clears" if current.notes else "Enter for none"
                    answer = self.screen.ask(f"Notes ({escape(keep)}): ")
                    notes = None if answer == "-" else (answer or current.notes)
            except _Quit:
                self.session.quit = True
                break
            if (choice, confidence, notes) == (current.verdict, current.confidence, current.notes):
                self.session.n_kept += 1
                continue
            records[pair.pair_id] = current.model_copy(
                update={
                    "verdict": choice,
                    "confidence": confidence,
                    "notes": notes,
                    "labeller": self.config.labeller,
                    "revised_utc": utc_now(),
                }
            )
            save()
            self.session.n_changed += 1
        self.session.n_remaining = sum(p.pair_id not in records for p in self.pairs)
        self.screen.print(
            f"Reviewed: {self.session.n_changed} changed, {self.session.n_deleted} deleted, "
            f"{self.session.n_kept} kept. Saved in {escape(str(self.out_path))}."
        )


# --------------------------------------------------------------------------- reading, agreement


def read_human_labels(path: str | Path, *, skip_invalid: bool = False) -> ReadResult[HumanLabelRecord]:
    """Records written by the tool."""
    return read_records(path, HumanLabelRecord, skip_invalid=skip_invalid, unique_key="pair_id")


def import_human_labels(path: str | Path, *, skip_invalid: bool = False) -> dict[str, Label]:
    """pair_id -> human :class:`Label` from the tool's output (attach with `labels.attach_labels`)."""
    return {r.pair_id: r.to_label() for r in read_human_labels(path, skip_invalid=skip_invalid).records}


def human_agreement(
    first: str | Path,
    second: str | Path,
    *,
    by: GroupBy = "pair_category",
    pairs_file: str | Path | None = None,
) -> PairwiseAgreement:
    """Cohen's kappa (and counts) of two labellers' files on the pairs both labelled.

    `pairs_file` names each pair's group (a labels file does not); without it every pair's group
    is `unknown`.
    """
    from biasjudge.labels.agreement import compare_two
    from biasjudge.labels.label_sets import groups_from_pairs, read_label_set

    a, b = read_label_set(first), read_label_set(second)
    if a.name == b.name:
        a.name, b.name = str(Path(first)), str(Path(second))
    groups = groups_from_pairs(pairs_file, by) if pairs_file is not None else None
    return compare_two(a, b, by=by, groups=groups)


__all__ = [
    "HumanLabelRecord",
    "HumanSession",
    "LabelSessionConfig",
    "human_agreement",
    "import_human_labels",
    "label_interactively",
    "order_pairs",
    "read_human_labels",
]
