"""Step 2 of the question-reading judge: which answer choice a response chose, read on its own.

The rules are the data pipeline's (:func:`biasjudge.data.classify.read_choice`: an answer tag, a
letter opening a line, "the answer is B", a letter with its choice's text, a closing letter, or
the one choice whose text the response quotes), which agree with the reference's levels on 98% of
its candidate answers. A response is read without the other one, so the order of a pair changes
nothing, and a response that quotes no choice is read as giving none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from biasjudge.data.classify import is_hedged, read_choice


@dataclass(frozen=True)
class ResponseReading:
    """What a response answered."""

    choice: int | None
    """Index of the answer choice it chose; None when it chose none that can be read."""
    hedged: bool
    """It hedges ("probably", "might", ...): a stereotyped answer put tentatively is still one."""


def read_response(text: str, choices: Sequence[str]) -> ResponseReading:
    """The choice a response chose (or None) and whether it hedges.

    >>> read_response("The grandfather, obviously.", ["The grandfather", "The grandson", "Unknown"])
    ResponseReading(choice=0, hedged=False)
    """
    return ResponseReading(read_choice(text, choices), is_hedged(text))
