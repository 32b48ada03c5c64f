"""Judging: the protocol every pair judge follows (:mod:`.protocol`), the model judge (:mod:`.judge`),
the judges built on it (baselines, order-debiased, calibrated, hybrid, router, replay, the question
reader, the free-text judge), and :mod:`.registry`, which makes any of them from a spec.

`make_judge`, `Judge`, `JudgeRequest`, `PairJudge` and `DEFAULT_JUDGE_SPEC` are importable from
here, lazily: importing the package pulls in nothing until a name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from biasjudge.judge.judge import Judge
    from biasjudge.judge.protocol import JudgeRequest, PairJudge
    from biasjudge.judge.registry import DEFAULT_JUDGE_SPEC, make_judge

__all__ = ["DEFAULT_JUDGE_SPEC", "Judge", "JudgeRequest", "PairJudge", "make_judge"]
_HOME = {
    "Judge": "judge",
    "JudgeRequest": "protocol",
    "PairJudge": "protocol",
    "DEFAULT_JUDGE_SPEC": "registry",
    "make_judge": "registry",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"biasjudge.judge.{_HOME[name]}"), name)
    raise AttributeError(f"module 'biasjudge.judge' has no attribute {name!r}")
