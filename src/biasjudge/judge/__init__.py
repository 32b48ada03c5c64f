"""Judging: the judge runtime (:mod:`.judge`) and the pair judges built on it (baselines,
order-debiased, hybrid, replay). Prompts are rendered by :mod:`biasjudge.prompting`.

The runtime's names are importable from here (`Judge`, `JudgeRequest`, `PairJudge`, `make_judge`,
`DEFAULT_JUDGE_SPEC`), but lazily: importing the package pulls in nothing until a name is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from biasjudge.judge.judge import DEFAULT_JUDGE_SPEC, Judge, JudgeRequest, PairJudge, make_judge

__all__ = ["DEFAULT_JUDGE_SPEC", "Judge", "JudgeRequest", "PairJudge", "make_judge"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from biasjudge.judge import judge

        return getattr(judge, name)
    raise AttributeError(f"module 'biasjudge.judge' has no attribute {name!r}")
