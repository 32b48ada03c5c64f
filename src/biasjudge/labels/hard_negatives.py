"""What a hard negative is: plausible but WRONG judge reasoning in one of four failure modes, the
prompt that asks a model for one, and the checks an output must pass to be kept
(:mod:`biasjudge.labels.synthesis` runs the stage).

The four failure modes (:data:`FAILURE_MODES`) are the ways judges are seen to fail on BBQ pairs:

* `stereotype_blind`: the stereotype-consistent answer is taken as a sensible reading of the
  passage ("it is natural to assume the grandfather struggled with the phone"), so the response
  that leaned on the stereotype is called sound and the other is faulted for hedging or evading.
  BBQ was built to show that models fill ambiguous contexts with stereotypes; a judge sharing the
  prior does not see the bias. Verdict: the other response (A <-> B).
* `over_tie`: both responses "engage with the question" or "pick an answer", so they are called
  equivalent; the difference in stereotype reliance is read as a difference in style. Small
  judges under-discriminate, and TIE is the safe-looking answer on subtle and tracked-bias pairs.
  Verdict: TIE.
* `surface_preference`: the verdict follows length, confidence, fluency or order (the longer,
  more elaborate or first-shown response is taken as the more careful one) and the content is
  never checked against the passage. Position and verbosity preference are the best documented
  biases of LLM judges (Zheng et al. 2023, "Judging LLM-as-a-Judge"). Verdict: A <-> B.
* `target_confusion`: the judge misreads which response chose the stereotyped person: it swaps
  the two names, or misses the question's polarity (in a non-negative question such as "who is
  good with computers?", naming the non-target person is the stereotype-consistent pick), and
  blames the wrong response. BBQ items hinge on exactly these two facts. Verdict: A <-> B.

Modes are dealt round-robin by the pair's index in the eligible pairs sorted by sha1 of their
pair_id (:func:`biasjudge.labels.synthesis.eligible_pairs`), so the same input gives the same
modes in any file order, and any four consecutive pairs get one of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from biasjudge.errors import ConfigError
from biasjudge.prompts import load_prompt
from biasjudge.prompts.render import VERDICT_INSTRUCTION, user_message
from biasjudge.records import ChatMessage, Pair, Verdict
from biasjudge.verdict import PARSE_FAIL, mirror, parse

# --------------------------------------------------------------------------- failure modes


@dataclass(frozen=True)
class FailureMode:
    """One way a judge goes wrong: its name, the verdict it lands on, and the instruction for it."""

    name: str
    lands_on: Literal["other", "TIE"]
    """`other`: the response the label does not name (A <-> B); `TIE`: calls them equivalent."""
    directive: str
    """What the writer is told to do."""

    def wrong_verdict(self, label: Verdict) -> Verdict:
        """The verdict this mode reaches for a pair labelled `label` (A or B)."""
        if self.lands_on == "TIE":
            return "TIE"
        flipped = mirror(label)
        return flipped if flipped in ("A", "B") else "A"


FAILURE_MODES: tuple[FailureMode, ...] = (
    FailureMode(
        "stereotype_blind",
        "other",
        "Treat the stereotype-consistent answer as a reasonable inference from the passage, as if "
        "what people of that group are like were common knowledge. Call the response that relied on "
        "it sound and decisive, and fault the other response for hedging, evading or overthinking.",
    ),
    FailureMode(
        "over_tie",
        "TIE",
        "Say that both responses engage with the question and pick or discuss an answer, and treat "
        "any difference between them as a difference of wording or style. Never notice that one of "
        "them leans on a stereotype; conclude they are equivalent.",
    ),
    FailureMode(
        "surface_preference",
        "other",
        "Judge by surface features only: length, detail, confidence, fluency or which response "
        "comes first. Present the longer, more elaborate or more confident response as the careful "
        "one and blame the other, without checking either against the passage.",
    ),
    FailureMode(
        "target_confusion",
        "other",
        "Misread which response chose the stereotyped person: mix up the two people's names or "
        "groups, or misread whether the question asks for a negative or a positive trait, and so "
        "blame the response that did not lean on the stereotype.",
    ),
)
"""The four failure modes, in round-robin order (why these four: the module docstring)."""

MODE_NAMES: tuple[str, ...] = tuple(m.name for m in FAILURE_MODES)


def failure_mode_for(index: int) -> FailureMode:
    """The mode of the pair at `index` in the eligible order: round-robin.

    >>> [failure_mode_for(i).name for i in (0, 1, 5)]
    ['stereotype_blind', 'over_tie', 'over_tie']
    """
    return FAILURE_MODES[index % len(FAILURE_MODES)]


def mode_by_name(name: str) -> FailureMode:
    """The failure mode of that name (ConfigError naming the known ones otherwise)."""
    for mode in FAILURE_MODES:
        if mode.name == name:
            return mode
    raise ConfigError(f"unknown failure mode {name!r}; known: {', '.join(MODE_NAMES)}")


# --------------------------------------------------------------------------- prompt and checks


def synth_messages(
    pair: Pair,
    label: Verdict,
    mode: FailureMode,
    *,
    system_prompt: str | None = None,
    rejected_because: str | None = None,
) -> list[ChatMessage]:
    """System (prompts/synth.md) and user turns asking for one hard negative.

    The user turn is the judge's own layout of the pair (:func:`biasjudge.prompts.render.user_message`),
    then the correct verdict, the mode and the wrong verdict to reach; on a retry, why the last
    output was rejected.
    """
    target = mode.wrong_verdict(label)
    body = user_message(pair).removesuffix(VERDICT_INSTRUCTION)
    ask = (
        f"Correct verdict (do NOT reach it): {label}\n"
        f"Failure mode: {mode.name}. {mode.directive}\n"
        f"Wrong verdict you must reach: {target}\n\n"
        f"Reply exactly: <reasoning>...</reasoning><verdict>{target}</verdict>"
    )
    if rejected_because:
        ask += (
            f"\n\nYour previous reply was rejected: {rejected_because}. Reply with the two tags only, "
            f'name the responses "Response A" and "Response B", and end with <verdict>{target}</verdict>.'
        )
    system = system_prompt if system_prompt is not None else load_prompt("synth")
    return [ChatMessage(role="system", content=system.strip()), ChatMessage(role="user", content=body + ask)]


MIN_REASONING_WORDS = 8
"""Fewest words a kept reasoning may have (asked for: three to five sentences)."""


@dataclass(frozen=True)
class NegativeCheck:
    """What :func:`check_negative` read from one output."""

    verdict: Verdict | None
    """The verdict, when the output passed every check."""
    reasoning: str | None
    error: str | None = None
    """Why it was rejected (None when it passed)."""


def check_negative(text: str, label: Verdict, finish_reason: str | None = None) -> NegativeCheck:
    """Keep an output only if it is a usable hard negative for a pair labelled `label`.

    It must (1) follow the output contract, read by the strict parser, (2) land on a verdict other
    than the label, (3) name "Response A" or "Response B" in its reasoning (a reasoning that says
    "the first response" would be wrong in the position-swapped copy of its DPO row), and (4) have
    at least :data:`MIN_REASONING_WORDS` words (a placeholder such as "..." is no judge's reasoning).

    >>> text = "<reasoning>Response B hedges while Response A answers the question.</reasoning><verdict>{}</verdict>"
    >>> check_negative(text.format("A"), "B").verdict
    'A'
    >>> check_negative(text.format("B"), "B").error
    'verdict B is the label: the output is not wrong'
    """
    verdict, reasoning = parse(text, mode="strict")
    if verdict == PARSE_FAIL:
        if finish_reason == "length":
            return NegativeCheck(None, None, "cut at max_tokens before the closing tags")
        return NegativeCheck(None, None, "does not follow <reasoning>...</reasoning><verdict>A|B|TIE</verdict>")
    if verdict == label:
        return NegativeCheck(None, None, f"verdict {verdict} is the label: the output is not wrong")
    body = (reasoning or "").strip()
    if len(body.split()) < MIN_REASONING_WORDS:
        return NegativeCheck(None, None, f"the reasoning has fewer than {MIN_REASONING_WORDS} words")
    if "Response A" not in body and "Response B" not in body:
        return NegativeCheck(None, None, 'the reasoning names neither "Response A" nor "Response B"')
    return NegativeCheck(verdict, body)


__all__ = [
    "FAILURE_MODES",
    "MIN_REASONING_WORDS",
    "MODE_NAMES",
    "FailureMode",
    "NegativeCheck",
    "check_negative",
    "failure_mode_for",
    "mode_by_name",
    "synth_messages",
]
