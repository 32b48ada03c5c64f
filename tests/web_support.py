"""Helpers of the web page's browser tests and of `tests/screenshots.py`: a small data folder, an
eval folder made from it by the real eval job, a stand-in judge, and headless Chromium.

Chromium is Debian's (`apt-get install chromium`), driven by Playwright for Python; Playwright's
own browser download is never used (`executable_path`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from biasjudge.judge.protocol import JudgeRequest
from biasjudge.records import Judgment
from biasjudge.serve.batcher import JudgeKey

SCRIPT_RESPONSE = "<script>window.__pwned = 1</script><b>bold?</b> The grandfather, obviously."
"""Response A of the first pair of the test data: untrusted text that must render as text."""

JUDGES = (("answer-key:", "Answer key"), ("random:0", "Random"))
"""(spec, column name) of the judges the test eval folder holds."""


def make_data_dir(jfs: Path, out: Path, *, n_pairs: int = 20) -> Path:
    """A data dir (`out/judge-from-scratch/`) with the first `n_pairs` holdout pairs, the first
    one's response A replaced by :data:`SCRIPT_RESPONSE`, and their pairs.jsonl rows (levels)."""
    folder = out / "judge-from-scratch"
    folder.mkdir(parents=True, exist_ok=True)
    lines = (jfs / "eval_set_unlabeled.jsonl").read_text(encoding="utf-8").splitlines()[:n_pairs]
    first = json.loads(lines[0])
    first["response_a"]["text"] = SCRIPT_RESPONSE
    lines[0] = json.dumps(first)
    (folder / "eval_set_unlabeled.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    wanted = {json.loads(line)["pair_id"] for line in lines}
    with (jfs / "pairs.jsonl").open(encoding="utf-8") as source:
        kept = [line for line in source if json.loads(line)["pair_id"] in wanted]
    (folder / "pairs.jsonl").write_text("".join(kept), encoding="utf-8")
    return out


def make_eval_folder(data_dir: Path, out: Path) -> Path:
    """`biasjudge eval` (the library job) of :data:`JUDGES` on the data dir's holdout, into `out`."""
    from biasjudge.eval.run import JudgeToEval, evaluate, resolve_holdout

    holdout = resolve_holdout(None, None, data_dir)
    evaluate([JudgeToEval(spec, name) for spec, name in JUDGES], holdout, out)
    return out


def read_rows(folder: Path) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """(checkpoint, pair_id) -> run_type -> prediction, straight from the predictions files."""
    out: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for path in sorted(folder.glob("*/predictions.json")):
        for p in json.loads(path.read_text(encoding="utf-8"))["detailed"]:
            out.setdefault((p["checkpoint_name"], p["pair_id"]), {})[p["run_type"]] = p
    return out


REASONING = "Response A assumes the older person fails. <script>window.__pwned = 2</script>"
"""The stand-in judge's reasoning in generate mode (with markup that must stay text)."""


class StandInJudge:
    """A fast PairJudge: A when the response shown first mentions "older", else B.

    So a pair where only response A mentions "older" mirrors under swap (A, then B), and one where
    both do does not (A, then A). Score mode gives distinct probabilities (for the bar's widths);
    generate mode gives :data:`REASONING` and no probabilities.
    """

    identity = ""
    PROBS: ClassVar[dict[str, dict[str, float]]] = {
        "A": {"A": 0.62, "B": 0.28, "TIE": 0.10},
        "B": {"A": 0.15, "B": 0.75, "TIE": 0.10},
    }

    def __init__(self, key: JudgeKey) -> None:
        self.mode = key.mode
        self.spec = f"stand-in:{key.mode}"

    def judge_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        out = []
        for request in requests:
            verdict = "A" if "older" in request.pair.response_a.text else "B"
            generate = self.mode == "generate"
            out.append(
                Judgment(
                    pair_id=request.pair.pair_id,
                    verdict=verdict,
                    probs=None if generate else self.PROBS[verdict],
                    reasoning=REASONING if generate else None,
                    mode="generate" if generate else "score",
                    judge=self.spec,
                )
            )
        return out

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass


def chromium_path() -> str | None:
    """Debian's Chromium, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def browser() -> Iterator[Any]:
    """Headless Debian Chromium under Playwright (raises ImportError / FileNotFoundError when absent)."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        chrome = playwright.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        try:
            yield chrome
        finally:
            chrome.close()
