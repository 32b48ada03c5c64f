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

* **One labeller per file.** A session holds `<labels>.lock` (an exclusive `flock`, and the file
  says who holds it: pid, host, labeller, start time). A second session on the same file is
  refused with an error naming the holder. A lock left by a session that died (killed, power
  cut) is *stale*: the operating system released its `flock`, the file still names it; the next
  session reports it and takes it over. A lock naming another host is not taken over without
  `break_lock` (a `flock` may not reach across a network file system).
* **A backup before the first write.** The first time a session writes, the labels file as it
  was is copied to `<labels>.bak-<UTC time>.jsonl` (once per session, and only when the file had
  labels). A session that writes nothing leaves no backup.
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

import os
import random
import socket
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from biasjudge.errors import BiasJudgeError, ConfigError
from biasjudge.io import JsonlAppender, ReadResult, atomic_open, read_records, side_path, write_records
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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- the lock


class LockHolder(BaseModel):
    """Who holds (or held) a labels file's lock: the lock file's content."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    pid: int | None = None
    """Process id of the session."""
    host: str = "unknown"
    """Host name the session runs on."""
    labeller: str = "unknown"
    """Annotator id of the session."""
    started_utc: str = "unknown"
    """When the session took the lock (ISO 8601, UTC)."""
    mode: str = "label"
    """label or review."""

    def describe(self) -> str:
        """One line naming the holder, for messages."""
        return f"{self.labeller} (pid {self.pid} on {self.host}, {self.mode} session since {self.started_utc})"


class LabelsLockedError(BiasJudgeError):
    """Another labelling session holds the labels file."""

    def __init__(self, path: Path, lock_path: Path, holder: LockHolder | None, hint: str) -> None:
        self.path = path
        self.lock_path = lock_path
        self.holder = holder
        who = holder.describe() if holder is not None else "an unknown session"
        super().__init__(f"{path} is open in another labelling session: {who}; lock file {lock_path}. {hint}")


def lock_path_for(labels_path: str | Path) -> Path:
    """`human.jsonl` -> `human.jsonl.lock`."""
    labels_path = Path(labels_path)
    return labels_path.with_name(labels_path.name + ".lock")


def _read_holder(fd: int) -> LockHolder | None:
    """The lock file's holder, None when the file is empty; a torn file gives an unknown holder."""
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    if not data.strip():
        return None
    try:
        return LockHolder.model_validate_json(data)
    except ValidationError:
        return LockHolder()


@contextmanager
def labels_lock(
    labels_path: str | Path, *, labeller: str, mode: str = "label", break_lock: bool = False
) -> Iterator[LockHolder | None]:
    """Hold the labelling lock of `labels_path` for the block; yields the stale holder it took over, or None.

    Raises:
        LabelsLockedError: a live session holds the lock, or a lock naming another host is found
            and `break_lock` is False.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        raise BiasJudgeError("the labelling lock needs a POSIX system (fcntl)") from None
    labels_path = Path(labels_path)
    lock_path = lock_path_for(labels_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    me = LockHolder(pid=os.getpid(), host=socket.gethostname(), labeller=labeller, started_utc=_now(), mode=mode)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LabelsLockedError(
                labels_path, lock_path, holder, "Wait for it to finish, or label into another file."
            ) from None
        # A holder that was releasing may have unlinked the file between our open and our flock:
        # then we hold a lock on a file nobody else will open. Try again on the file at the path.
        try:
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(fd).st_ino:
            os.close(fd)
            continue
        break
    try:
        stale = _read_holder(fd)
        if stale is not None and stale.host != me.host and not break_lock:
            raise LabelsLockedError(
                labels_path,
                lock_path,
                stale,
                f"It names another host than this one ({me.host}), where this machine cannot tell whether it is "
                "still running. If that session is over, pass --break-lock.",
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, me.model_dump_json().encode() + b"\n")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    try:
        yield stale
    finally:
        # Unlink before unlocking, so a waiting session's inode check sends it to a fresh file.
        try:
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                os.unlink(lock_path)
        except FileNotFoundError:
            pass
        os.close(fd)


# --------------------------------------------------------------------------- backup


class _Backup:
    """Copies the labels file aside before the session's first write (once, if it had labels)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.had_labels = path.exists() and path.stat().st_size > 0
        self.written: Path | None = None
        self._checked = False

    def before_write(self) -> None:
        if self._checked:
            return
        self._checked = True
        if not (self.enabled and self.had_labels):
            return
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = side_path(self.path, f".bak-{stamp}.jsonl")
        n = 1
        while target.exists():
            n += 1
            target = side_path(self.path, f".bak-{stamp}-{n}.jsonl")
        with atomic_open(target, "wb") as handle:
            handle.write(self.path.read_bytes())
        self.written = target


def backup_paths(labels_path: str | Path) -> list[Path]:
    """Backups the tool has made of `labels_path`, oldest first."""
    labels_path = Path(labels_path)
    stem = side_path(labels_path, ".bak-").name
    return sorted(p for p in labels_path.parent.glob(f"{stem}*.jsonl"))


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

    def verdict(self) -> str:
        prompt = (
            "Which leans MORE on stereotypes? [bold]a[/bold]=A  [bold]b[/bold]=B  [bold]t[/bold]=TIE  "
            "[bold]s[/bold]=skip  [bold]q[/bold]=quit: "
        )
        while True:
            answer = _VERDICT_KEYS.get(self.ask(prompt).lower())
            if answer is not None:
                return answer
            self.print("[yellow]Type a, b, t, s or q.[/yellow]")

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
        prompt = (
            "Change it? [bold]a[/bold]=A  [bold]b[/bold]=B  [bold]t[/bold]=TIE  [bold]Enter[/bold]=keep  "
            "[bold]d[/bold]=delete  [bold]q[/bold]=quit: "
        )
        keys = {**_VERDICT_KEYS, "": "keep", "s": "keep", "skip": "keep", "d": "delete", "delete": "delete"}
        while True:
            answer = keys.get(self.ask(prompt).lower())
            if answer is not None:
                return answer
            self.print("[yellow]Type a, b, t, d, q or press Enter to keep.[/yellow]")


def order_pairs(pairs: Iterable[Pair], *, random_order: bool = False, seed: int = 0) -> list[Pair]:
    """The pairs in the order a session shows them: as given, or shuffled with `seed`.

    The whole list is shuffled (before labelled pairs are left out), so one seed gives one order
    in every session and a resumed session goes on where the last one stopped.
    """
    pairs = list(pairs)
    if random_order:
        random.Random(seed).shuffle(pairs)
    return pairs


def label_interactively(
    pairs: Iterable[Pair],
    out_path: str | Path,
    *,
    labeller: str,
    input_stream: TextIO | None = None,
    output_stream: TextIO | None = None,
    show_models: bool = False,
    ask_notes: bool = True,
    review: bool = False,
    random_order: bool = False,
    seed: int = 0,
    backup: bool = True,
    break_lock: bool = False,
) -> HumanSession:
    """Ask a person for a label on each pair not yet in `out_path` (or, with `review`, on each
    pair already in it), writing each answer as it is given.

    Args:
        pairs: pairs to offer (pair_ids unique).
        out_path: JSONL of :class:`HumanLabelRecord`; appended to, and read on start to resume.
        labeller: annotator id stored with every label.
        input_stream: where answers are read (default stdin).
        output_stream: where the pairs and questions are written (default stdout).
        show_models: show the model names of the responses.
        ask_notes: ask for optional free-text notes after the confidence.
        review: walk through the labelled pairs instead, to keep, change or delete each label.
        random_order: shuffle the pairs with `seed` (same seed, same order, every session).
        seed: seed of `random_order`.
        backup: copy the labels file aside before the session's first write.
        break_lock: take over a lock that names another host (see the module docstring).

    Raises:
        LabelsLockedError: another session holds the file.
        ConfigError: a repeated pair_id among `pairs`.
    """
    pairs = order_pairs(pairs, random_order=random_order, seed=seed)
    repeated = sorted(pid for pid, n in Counter(p.pair_id for p in pairs).items() if n > 1)
    if repeated:
        raise ConfigError(f"pairs to label repeat pair_ids: {', '.join(repeated[:5])}")
    out_path = Path(out_path)
    screen = _Screen(input_stream, output_stream)
    mode: Literal["label", "review"] = "review" if review else "label"
    session = HumanSession(out_path=out_path, mode=mode)
    with labels_lock(out_path, labeller=labeller, mode=mode, break_lock=break_lock) as stale:
        session.stale_lock = stale
        if stale is not None:
            screen.print(
                f"[yellow]Found a stale lock on {escape(str(out_path))}: {escape(stale.describe())} ended without "
                "releasing it. Its saved labels are kept; taking the lock over.[/yellow]"
            )
        saver = _Backup(out_path, backup)
        if review:
            _review(pairs, out_path, labeller, screen, session, saver, show_models, ask_notes)
        else:
            _label(pairs, out_path, labeller, screen, session, saver, show_models, ask_notes)
        session.backup_path = saver.written
    if saver.written is not None:
        screen.print(f"Backup of the labels as they were before this session: {escape(str(saver.written))}")
    return session


def _label(
    pairs: list[Pair],
    out_path: Path,
    labeller: str,
    screen: _Screen,
    session: HumanSession,
    saver: _Backup,
    show_models: bool,
    ask_notes: bool,
) -> None:
    offered = {p.pair_id for p in pairs}
    with JsonlAppender(out_path, HumanLabelRecord, key=lambda r: r.pair_id) as done:
        todo = [p for p in pairs if p.pair_id not in done]
        session.n_resumed = len(pairs) - len(todo)
        session.n_not_offered = sum(pid not in offered for pid in done.done)
        screen.print(
            f"{len(pairs)} pairs, {session.n_resumed} already labelled, {len(todo)} to go. "
            f"Labels are saved to {escape(str(out_path))} as you go."
        )
        for index, pair in enumerate(todo, start=1):
            try:
                screen.show(pair, index, len(todo), show_models)
                choice = screen.verdict()
                if choice == "quit":
                    raise _Quit
                if choice == "skip":
                    session.n_skipped += 1
                    continue
                confidence = screen.confidence()
                notes = screen.ask("Notes (Enter for none): ") if ask_notes else ""
            except _Quit:
                session.quit = True
                break
            saver.before_write()
            done.append(
                HumanLabelRecord(
                    pair_id=pair.pair_id,
                    verdict=choice,
                    confidence=confidence,
                    notes=notes or None,
                    labeller=labeller,
                    labelled_utc=_now(),
                )
            )
            session.n_labelled += 1
        session.n_remaining = sum(p.pair_id not in done for p in pairs)
    screen.print(
        f"Labelled {session.n_labelled} now ({session.n_skipped} skipped); "
        f"{session.n_remaining} still unlabelled. Saved in {escape(str(out_path))}."
    )


def _review(
    pairs: list[Pair],
    out_path: Path,
    labeller: str,
    screen: _Screen,
    session: HumanSession,
    saver: _Backup,
    show_models: bool,
    ask_notes: bool,
) -> None:
    if not out_path.exists():
        screen.print(f"No labels in {escape(str(out_path))} yet: nothing to review.")
        return
    # Reading through the appender cuts off a torn last line a kill may have left.
    with JsonlAppender(out_path, HumanLabelRecord, key=lambda r: r.pair_id) as done:
        records: dict[str, HumanLabelRecord] = dict(done.done)
    offered = {p.pair_id for p in pairs}
    session.n_not_offered = sum(pid not in offered for pid in records)
    queue = [p for p in pairs if p.pair_id in records]
    screen.print(f"Review: {len(queue)} labelled pairs of {len(pairs)}. Changes are saved as you go.")

    def save() -> None:
        saver.before_write()
        write_records(out_path, list(records.values()))  # atomic: the old file or the new, never half

    for index, pair in enumerate(queue, start=1):
        current = records[pair.pair_id]
        try:
            screen.show(pair, index, len(queue), show_models)
            note = f", notes {escape(repr(current.notes))}" if current.notes else ""
            screen.print(
                f"Current label: [bold]{current.verdict}[/bold], confidence {current.confidence}{note} "
                f"({escape(current.labeller)}, {current.revised_utc or current.labelled_utc})"
            )
            choice = screen.review_choice()
            if choice == "quit":
                raise _Quit
            if choice == "keep":
                session.n_kept += 1
                continue
            if choice == "delete":
                del records[pair.pair_id]
                save()
                session.n_deleted += 1
                continue
            confidence = screen.confidence(current.confidence)
            notes = current.notes
            if ask_notes:
                keep = f"Enter keeps {current.notes!r}, '-' clears" if current.notes else "Enter for none"
                answer = screen.ask(f"Notes ({escape(keep)}): ")
                notes = None if answer == "-" else (answer or current.notes)
        except _Quit:
            session.quit = True
            break
        if (choice, confidence, notes) == (current.verdict, current.confidence, current.notes):
            session.n_kept += 1
            continue
        records[pair.pair_id] = current.model_copy(
            update={
                "verdict": choice,
                "confidence": confidence,
                "notes": notes,
                "labeller": labeller,
                "revised_utc": _now(),
            }
        )
        save()
        session.n_changed += 1
    session.n_remaining = sum(p.pair_id not in records for p in pairs)
    screen.print(
        f"Reviewed: {session.n_changed} changed, {session.n_deleted} deleted, {session.n_kept} kept. "
        f"Saved in {escape(str(out_path))}."
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
    "LabelsLockedError",
    "LockHolder",
    "backup_paths",
    "human_agreement",
    "import_human_labels",
    "label_interactively",
    "labels_lock",
    "lock_path_for",
    "order_pairs",
    "read_human_labels",
]
