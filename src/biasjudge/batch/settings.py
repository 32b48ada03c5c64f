"""How a `judge-file` job builds its judge (:mod:`biasjudge.batch.judge_file`): in its own process,
or once per actor of the Ray engine (:mod:`biasjudge.batch.ray_engine`), which is sent these settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from biasjudge.backends.registry import DEFAULT_JUDGE_SPEC
from biasjudge.records import JudgeMode

if TYPE_CHECKING:
    from biasjudge.judge.protocol import PairJudge


@dataclass(frozen=True)
class JudgeSettings:
    """How to build the judge: what `biasjudge judge` takes, and what each Ray actor rebuilds."""

    spec: str = DEFAULT_JUDGE_SPEC
    """The judge spec (see :mod:`biasjudge.backends.registry`)."""
    mode: JudgeMode = "score"
    """score or generate."""
    system_prompt: str | None = None
    """A system prompt sent byte for byte; None = the judge's own."""

    def make(self, **options: Any) -> PairJudge:
        """The judge (loads the model); `options` go to :func:`biasjudge.judge.registry.make_judge`."""
        from biasjudge.judge.registry import make_judge

        return make_judge(self.spec, system_prompt=self.system_prompt, mode=self.mode, **options)
