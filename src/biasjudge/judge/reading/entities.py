"""Entity anonymisation: the people a question asks about, replaced by placeholders X, Y, ...

Which of two people a passage says did something does not depend on who they are. Replacing each
person-option's mention by a placeholder (in order of first mention in the context: X, then Y)
makes "the grandson ... the grandfather" and "the nephew ... the uncle" the same text, so a model
learns how a passage assigns an attribute instead of which names it uses (the standard device of
reading-comprehension datasets with anonymised entities). The options' own words tell where they
are mentioned: the words that distinguish an option from the others ("mentally ill" in "The person
who is mentally ill" against "The spouse"), found in the text as a run of nearby words.

Options that say the answer cannot be known ("Can't be determined") get no placeholder.

>>> anon = anonymize("Who forgot the phone?", "A grandson and his grandfather came in. The grandfather forgot it.",
...                  ["The grandfather", "The grandson", "Can't be determined"])
>>> anon.question, anon.context, anon.placeholders
('Who forgot the phone?', 'A X and his Y came in. The Y forgot it.', ('Y', 'X', None))
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from biasjudge.judge.reading.explain import is_unknown_option

PLACEHOLDERS = ("X", "Y", "Z", "W", "V")
_WORD = re.compile(r"[A-Za-z0-9]+(?:[-'][A-Za-z0-9]+)*")
_COMMON = {
    "the", "a", "an", "one", "who", "whom", "whose", "is", "was", "are", "were", "be", "with", "of", "in",
    "on", "at", "to", "and", "or", "that", "has", "had", "have", "their", "his", "her", "its", "person",
    "people", "guy", "dressed", "wearing", "someone", "individual", "family", "s",
}  # fmt: skip
"""Words that name no one in particular: dropped from an option's distinguishing words unless
nothing else is left ("The man" against "The woman" keeps "man")."""
_SENTENCE_END = re.compile(r"[.!?;]")
MAX_GAP = 3
"""Distinguishing words at most this many words apart form one mention."""


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _content(option: str) -> list[str]:
    words = _words(option)
    return [w for w in words if w not in _COMMON] or words


def distinguishing_words(option: str, others: Sequence[str]) -> list[str]:
    """The words of `option` that tell it from the `others` (see the module docstring); all its
    content words when it has none of its own ("scars" against "no scars").

    >>> distinguishing_words("The person who is mentally ill", ["The spouse"])
    ['mentally', 'ill']
    >>> distinguishing_words("The man", ["The woman"])
    ['man']
    >>> distinguishing_words("The man with scars", ["The man with no scars"])
    ['man', 'scars']
    """
    other_words = {w for o in others for w in _content(o)}
    own = [w for w in _content(option) if w not in other_words]
    return own or _content(option)


@dataclass(frozen=True)
class Anonymized:
    """A question and context with the person-options replaced by placeholders."""

    question: str
    context: str
    placeholders: tuple[str | None, ...]
    """Per option, in order: its placeholder, or None for an "unknown" option (or one never found)."""
    mentions: int
    """Placeholder mentions in the context (two people introduced once each: 2; a passage that goes
    on to say what each did mentions them again)."""


def _spans(text: str, words: Sequence[str], required: Sequence[str] = ()) -> list[tuple[int, int]]:
    """Character spans of runs of `words` in `text`: different words of the list at most MAX_GAP
    words apart within a sentence, covering at least half of them and all of `required`.

    >>> [("A boy met a girl. The girl left."[s:e]) for s, e in _spans("A boy met a girl. The girl left.", ["girl"])]
    ['girl', 'girl']
    """
    tokens = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text)]
    wanted = set(words)
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        if tokens[i][2] not in wanted:
            i += 1
            continue
        j, last, seen = i, i, {tokens[i][2]}
        while j + 1 < len(tokens) and j + 1 - last <= MAX_GAP:
            j += 1
            word = tokens[j][2]
            if word in seen or _SENTENCE_END.search(text, tokens[j - 1][1], tokens[j][0]):
                break  # the same word again is the next mention; a mention stays in its sentence
            if word in wanted:
                last = j
                seen.add(word)
        if 2 * len(seen) >= len(wanted) and seen.issuperset(required):
            spans.append((tokens[i][0], tokens[last][1]))
        i = last + 1
    return spans


def _shared(contents: dict[int, list[str]], i: int) -> set[str]:
    return {w for j, words in contents.items() if j != i for w in words}


def anonymize(question: str, context: str, options: Sequence[str]) -> Anonymized:
    """Replace each person-option's mentions in `question` and `context` by a placeholder.

    Options that differ only by words the other one adds ("with scars", "with no scars") are
    matched by their content words, the longer one first, so that the shorter one never claims
    the longer one's mentions.
    """
    persons = [i for i, o in enumerate(options) if not is_unknown_option(o)]
    contents = {i: _content(options[i]) for i in persons}
    nested = any(set(contents[i]) <= set(contents[j]) for i in persons for j in persons if i != j)
    distinct = {i: distinguishing_words(options[i], [options[j] for j in persons if j != i]) for i in persons}
    required: dict[int, list[str]] = {i: [] for i in persons}
    words = distinct
    if nested:  # each matched by all its content words, and never without the words only it has
        words = contents
        required = {i: [w for w in distinct[i] if w not in _shared(contents, i)] for i in persons}
        persons.sort(key=lambda i: -len(contents[i]))

    def mentions_of(text: str) -> list[tuple[int, int, int]]:
        """(start, end, option) of every mention, a longer option's first; overlaps dropped."""
        found: list[tuple[int, int, int]] = []
        for i in persons:
            for start, end in _spans(text, words[i], required[i]):
                if all(end <= s or start >= e for s, e, _ in found):
                    found.append((start, end, i))
        return sorted(found)

    in_context = mentions_of(context)
    order = list(dict.fromkeys(i for _, _, i in in_context))
    names = {i: PLACEHOLDERS[k] for k, i in enumerate(order[: len(PLACEHOLDERS)])}

    def replace(text: str) -> str:
        out, at = [], 0
        for start, end, i in mentions_of(text):
            if i in names:
                out += [text[at:start], names[i]]
                at = end
        return "".join([*out, text[at:]])

    anonymous = replace(context)
    mentions = len(re.findall(r"\b(?:" + "|".join(PLACEHOLDERS) + r")\b", anonymous))
    return Anonymized(replace(question), anonymous, tuple(names.get(i) for i in range(len(options))), mentions)
