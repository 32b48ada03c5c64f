"""The eval job as a library: one eval per output folder at a time, and no stale lock after a kill."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from biasjudge.errors import ConfigError
from biasjudge.eval.run import LOCK_NAME, JudgeToEval, evaluate, load_holdout
from biasjudge.eval.settings import EvalSettings
from biasjudge.io import folder_lock

HOLD = (
    "from biasjudge.io import folder_lock; import sys, time\n"
    "with folder_lock(sys.argv[1], sys.argv[2]):\n"
    "    print('held', flush=True); time.sleep(60)\n"
)


def _holder(folder: Path) -> subprocess.Popen[str]:
    """A second process holding the eval lock of `folder` until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), LOCK_NAME], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_eval_on_the_same_folder_is_refused_then_runs_after_a_kill(jfs: Path, tmp_path: Path) -> None:
    pairs = load_holdout(jfs / "eval_set_unlabeled.jsonl", jfs / "pairs.jsonl")[:4]
    out = tmp_path / "eval"
    holder = _holder(out)
    try:
        with pytest.raises(ConfigError, match=rf"{out}: an eval is already writing here \(process {holder.pid}\)"):
            evaluate([JudgeToEval("answer-key:", "key")], pairs, out, EvalSettings(runs="original"))
        assert not (out / "key").exists()  # refused before judging anything
    finally:
        holder.send_signal(signal.SIGKILL)  # a kill leaves the lock file behind, but not the lock
        holder.wait()
    result = evaluate([JudgeToEval("answer-key:", "key")], pairs, out, EvalSettings(runs="original"))
    assert len(result.logs[0].detailed) == 4 and result.markdown.exists()


def test_the_lock_is_released_when_the_block_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), folder_lock(tmp_path, "x.lock"):
        raise RuntimeError("boom")
    with folder_lock(tmp_path, "x.lock"):  # would raise ConfigError if still held
        pass


def test_two_judges_with_one_folder_are_refused(jfs: Path, tmp_path: Path) -> None:
    pairs = load_holdout(jfs / "eval_set_unlabeled.jsonl")[:2]
    with pytest.raises(ConfigError, match="its own name"):
        evaluate([JudgeToEval("answer-key:", "A b"), JudgeToEval("random:", "a-b")], pairs, tmp_path)
