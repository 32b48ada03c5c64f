"""`replay:PREDICTIONS.json`: a judge that answers from a saved eval log instead of a model.

Score-mode logs keep each prediction's A/B/TIE probabilities. Replaying them lets a judge built on
probabilities, such as `hybrid:replay:runs/eval/judge/predictions.json`, be evaluated without
calling the model again: the original-order request gets the log's `original` probabilities, the
swapped one the `swapped` run's, and a request at temperature T > 0 draws from those
probabilities as a score-mode judge would. A pair or order the log does not have is PARSE_FAIL.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from biasjudge.errors import BackendError
from biasjudge.records import EvalLog, JudgeMode, Judgment, Verdict, WrapperMetadata, pick_checkpoint
from biasjudge.verdict import PARSE_FAIL, VERDICTS

if TYPE_CHECKING:
    from biasjudge.judge.protocol import JudgeRequest


class ReplayJudge:
    """A PairJudge reading score-mode probabilities from an eval log (see the module docstring).

    Args:
        target: the predictions.json to replay.
        spec: this judge's spec string.
        mode: must be `score`.
        checkpoint: which checkpoint of a log holding several (default: the only one).
    """

    def __init__(
        self, target: str = "", *, spec: str = "replay:", mode: JudgeMode = "score", checkpoint: str | None = None
    ) -> None:
        from biasjudge.io import read_document, sha256_file

        if mode != "score":
            raise BackendError("replay: replays probabilities, so it runs in score mode only")
        path = Path(target)
        if not path.is_file():
            raise BackendError(f"replay: eval log {path} not found")
        log = read_document(path, EvalLog)
        name = pick_checkpoint(
            sorted({p.checkpoint_name for p in log.detailed}), checkpoint, path, "add ?checkpoint=NAME"
        )
        self.probs: dict[tuple[str, bool], dict[str, float]] = {}
        self.single: dict[tuple[str, bool], Verdict | None] = {}
        for pred in log.detailed:
            if pred.checkpoint_name == name and pred.run_type in ("original", "swapped") and pred.probs:
                key = (pred.pair_id, pred.run_type == "swapped")
                self.probs[key] = {v: float(pred.probs.get(v, 0.0)) for v in VERDICTS}
                self.single[key] = pred.wrappers.single_order_verdict
        if not self.probs:
            raise BackendError(f"replay: {path} has no score-mode probabilities for {name!r}")
        self.spec = spec
        self.mode: JudgeMode = "score"
        self.identity = f"replay:{sha256_file(path)[:16]}"
        """The log's content hash: an eval cache of a judge built on this one goes stale with the log."""

    def judge_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        """Answer each request from the log's probabilities; a pair or order it lacks is PARSE_FAIL."""
        from biasjudge.judge.protocol import request_fields, verdict_from_probs

        out: list[Judgment] = []
        for request in requests:
            key = (request.pair.pair_id, request.swapped)
            common = request_fields(request, judge=self.spec, mode=self.mode)
            probs = self.probs.get(key)
            if probs is None:
                out.append(Judgment(verdict=PARSE_FAIL, raw_output="not in the replayed log", **common))
                continue
            verdict, normalised = verdict_from_probs(probs, request.temperature, request.seed)
            wrappers = WrapperMetadata(single_order_verdict=self.single[key])
            out.append(Judgment(verdict=verdict, probs=normalised, wrappers=wrappers, **common))
        return out

    def count_tokens(self, text: str) -> int:
        """Whitespace-separated words (a replayed log has no tokenizer)."""
        return len(text.split())

    def close(self) -> None:
        """Nothing to free."""
