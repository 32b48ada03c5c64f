"""Bad input never reaches a traceback.

Every reader, fed corrupted bytes, either gives a correct result or raises a BiasJudgeError;
inputs that are merely unusual (BOM, CRLF, blank lines, trailing whitespace) read the same as the
clean file; and the `biasjudge` entry point, run as a user runs it (a subprocess), answers bad
input with one red line naming the file and exit code 2.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from biasjudge.config import load_config
from biasjudge.data.bbq import _read_raw_file
from biasjudge.data.holdout import load_pairs
from biasjudge.dataset.rows import read_hard_negatives
from biasjudge.errors import BiasJudgeError, DataError
from biasjudge.eval.report import read_log
from biasjudge.io import JsonlAppender, read_json, read_records, write_records
from biasjudge.prompts import read_prompt_file
from biasjudge.records import Pair, Question
from biasjudge.train.config import SFTRunConfig

ROOT = Path(__file__).resolve().parents[1]


def _head(path: Path, n: int) -> bytes:
    return b"".join(path.read_bytes().splitlines(keepends=True)[:n])


@pytest.fixture(scope="module")
def samples(jfs: Path, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Small valid files of each kind, cut from the real data."""
    log = json.loads((jfs / "eval-results" / "base_gemma4_e4b_verdicts.json").read_text())
    log["detailed"] = log["detailed"][:6]
    folder = tmp_path_factory.mktemp("parquet")
    pairs = read_records(jfs / "eval_set_unlabeled.jsonl", Pair, limit=3).records
    write_records(folder / "pairs.parquet", pairs)
    return {
        "holdout": _head(jfs / "eval_set_unlabeled.jsonl", 3),
        "questions": _head(jfs / "bbq_sample.jsonl", 3),
        "bbq": _head(shared_data / "bbq" / "Age.jsonl", 3),
        "hard_negatives": _head(jfs / "synthesis_results.jsonl", 3),
        "eval_log": json.dumps(log, indent=1).encode(),
        "config": (ROOT / "configs" / "sft-cpu.yaml").read_bytes(),
        "prompt": (jfs / "judge_system_prompt.md").read_bytes(),
        "parquet": (folder / "pairs.parquet").read_bytes(),
    }


def _appender(path: Path) -> Any:
    with JsonlAppender(path, Pair, key=lambda p: p.pair_id) as appender:
        return sorted(appender.done)


# (sample, suffix, reader): every reader of a user's file, each given the kind it reads.
READERS: dict[str, tuple[str, str, Callable[[Path], Any]]] = {
    "read_records(Pair)": ("holdout", ".jsonl", lambda p: read_records(p, Pair).records),
    "load_pairs": ("holdout", ".jsonl", lambda p: load_pairs(p).records),
    "load_pairs(skip_invalid)": ("holdout", ".jsonl", lambda p: len(load_pairs(p, skip_invalid=True).records)),
    "read_records(Question)": ("questions", ".jsonl", lambda p: read_records(p, Question).records),
    # `_line` is where a row sits: blank lines move it, so it is left out of the comparison.
    "bbq raw file": (
        "bbq",
        ".jsonl",
        lambda p: [{k: v for k, v in r.items() if k != "_line"} for r in _read_raw_file(p)],
    ),
    "read_hard_negatives": ("hard_negatives", ".jsonl", lambda p: read_hard_negatives(p).records),
    "read_log": ("eval_log", ".json", read_log),
    "read_json": ("eval_log", ".json", read_json),
    "load_config": ("config", ".yaml", lambda p: load_config(SFTRunConfig, p)),
    "read_prompt_file": ("prompt", ".md", read_prompt_file),
    "JsonlAppender recovery": ("holdout", ".jsonl", _appender),
    "read_records(parquet)": ("parquet", ".parquet", lambda p: read_records(p, Pair).records),
}


@st.composite
def corruptions(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with up to four random edits: bytes flipped, inserted or deleted, or the file cut."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut", "invalid_utf8"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del out[at : at + draw(st.integers(1, 64))]
        elif op == "cut":
            del out[at:]
        else:
            out[at:at] = b"\xff\xc3("
    return bytes(out)


@pytest.mark.parametrize("name", list(READERS))
def test_corrupted_bytes_give_a_biasjudge_error_or_a_result(name: str, samples: dict[str, bytes]) -> None:
    sample, suffix, reader = READERS[name]

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(corruptions(samples[sample]))
    def check(data: bytes) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"input{suffix}"
            path.write_bytes(data)
            # Any other exception fails the test, with the bytes that caused it.
            with contextlib.suppress(BiasJudgeError):
                reader(path)

    check()


@pytest.mark.parametrize("name", [n for n in READERS if n != "JsonlAppender recovery"])
def test_missing_path_is_a_data_error(name: str, tmp_path: Path) -> None:
    _, suffix, reader = READERS[name]
    with pytest.raises(BiasJudgeError, match=r"no such file|not found"):
        reader(tmp_path / f"missing{suffix}")


def test_the_appender_starts_a_missing_file(tmp_path: Path) -> None:
    assert _appender(tmp_path / "new.jsonl") == [] and (tmp_path / "new.jsonl").exists()


@pytest.mark.parametrize("name", list(READERS))
def test_a_folder_is_a_data_error(name: str, tmp_path: Path) -> None:
    _, suffix, reader = READERS[name]
    folder = tmp_path / f"folder{suffix}"
    folder.mkdir()
    with pytest.raises(BiasJudgeError, match=r"folder|not a file"):
        reader(folder)


def _unusual(data: bytes) -> dict[str, bytes]:
    lines = data.splitlines()
    return {
        "bom": b"\xef\xbb\xbf" + data,
        "crlf": b"".join(line + b"\r\n" for line in lines),
        "blank lines": b"\n\n".join(lines) + b"\n\n\n",
        "trailing whitespace": b"".join(line + b"  \t\n" for line in lines),
        "no final newline": b"\n".join(lines),
    }


LINE_READERS = [n for n, (s, suffix, _) in READERS.items() if suffix == ".jsonl"] + ["read_log", "load_config"]


@pytest.mark.parametrize("name", LINE_READERS)
@pytest.mark.parametrize("variant", list(_unusual(b"x")))
def test_unusual_but_valid_files_read_like_the_clean_one(
    name: str, variant: str, samples: dict[str, bytes], tmp_path: Path
) -> None:
    sample, suffix, reader = READERS[name]
    clean = tmp_path / f"clean{suffix}"
    clean.write_bytes(samples[sample])
    odd = tmp_path / f"odd{suffix}"
    odd.write_bytes(_unusual(samples[sample])[variant])
    assert reader(odd) == reader(clean)


def test_empty_file_is_an_error_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "pairs.jsonl"
    empty.write_bytes(b"\n  \n")
    with pytest.raises(DataError, match=r"pairs\.jsonl: empty file"):
        read_records(empty, Pair)
    assert read_records(empty, Pair, allow_empty=True).records == []


def test_bad_utf8_names_the_line(samples: dict[str, bytes], tmp_path: Path) -> None:
    lines = samples["holdout"].splitlines(keepends=True)
    path = tmp_path / "holdout.jsonl"
    path.write_bytes(lines[0] + lines[1].replace(b'"', b'"\xe9', 1) + lines[2])
    with pytest.raises(DataError) as info:
        read_records(path, Pair)
    assert info.value.line == 2 and "not UTF-8" in info.value.message


def test_a_file_of_another_kind_is_named(samples: dict[str, bytes], tmp_path: Path) -> None:
    log = tmp_path / "predictions.json"
    log.write_bytes(samples["eval_log"])
    with pytest.raises(DataError, match="eval log"):
        read_records(log, Pair)
    holdout = tmp_path / "holdout.jsonl"
    holdout.write_bytes(samples["holdout"])
    with pytest.raises(DataError, match="JSON Lines"):
        read_log(holdout)
    questions = tmp_path / "questions.jsonl"
    questions.write_bytes(samples["questions"])
    with pytest.raises(DataError, match="BBQ question records, not Pair"):
        load_pairs(questions)


def test_a_bad_row_after_good_ones_is_not_taken_for_another_kind(samples: dict[str, bytes], tmp_path: Path) -> None:
    # The kind is sniffed from the first row only: a later bad row is reported as itself.
    path = tmp_path / "holdout.jsonl"
    path.write_bytes(samples["holdout"] + samples["questions"].splitlines(keepends=True)[0])
    with pytest.raises(DataError) as info:
        read_records(path, Pair)
    assert info.value.line == 4 and "BBQ question" not in str(info.value)


def test_eval_log_type_error_names_the_field(samples: dict[str, bytes], tmp_path: Path) -> None:
    log = json.loads(samples["eval_log"])
    log["detailed"][2]["verdict"] = 7
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps(log))
    with pytest.raises(DataError, match=r"field 'detailed\.2\.verdict'"):
        read_log(path)


# --------------------------------------------------------------------------- the entry point


def _biasjudge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = "from biasjudge.cli.main import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def bad_files(samples: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    lines = samples["holdout"].splitlines(keepends=True)
    wrong_type = json.loads(lines[1])
    wrong_type["question_id"] = 12
    log = json.loads(samples["eval_log"])
    log["detailed"] = []
    files = {
        "empty.jsonl": b"",
        "latin1.jsonl": lines[0] + b'{"pair_id": "caf\xe9"}\n',
        "cut.jsonl": lines[0] + lines[1][:40],
        "wrong_type.jsonl": lines[0] + json.dumps(wrong_type).encode() + b"\n",
        "holdout.jsonl": samples["holdout"],
        "pair.json": lines[0],
        "predictions.json": samples["eval_log"],
        "no_predictions.json": json.dumps(log).encode(),
        "prompt_latin1.md": b"You judge bias \xe9.\n",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "a_folder.jsonl").mkdir()
    return {name: folder / name for name in [*files, "a_folder.jsonl"]}


# (arguments with {file} placeholders, the file the error must name, text the line must contain)
CASES = [
    (["data", "stats", "{missing.jsonl}"], "missing.jsonl", "no such file"),
    (["data", "stats", "{a_folder.jsonl}"], "a_folder.jsonl", "folder"),
    (["data", "stats", "{empty.jsonl}"], "empty.jsonl", "empty file"),
    (["data", "stats", "{latin1.jsonl}"], "latin1.jsonl:2", "not UTF-8"),
    (["data", "stats", "{cut.jsonl}"], "cut.jsonl:2", "cut off"),
    (["data", "rows", "--pairs", "{wrong_type.jsonl}", "--out", "{out}"], "wrong_type.jsonl:2", "question_id"),
    (["data", "rows", "--pairs", "{missing.jsonl}", "--out", "{out}"], "missing.jsonl", "no such file"),
    (["data", "label", "--pairs", "{latin1.jsonl}", "--out", "{out}/l.jsonl"], "latin1.jsonl:2", "not UTF-8"),
    (["data", "check", "--holdout", "{holdout.jsonl}", "--train", "{missing.jsonl}"], "missing.jsonl", "no such"),
    (["data", "split", "--pairs", "{predictions.json}", "--out", "{out}"], "predictions.json", "eval log"),
    (["metrics", "--predictions", "{holdout.jsonl}", "--holdout", "{holdout.jsonl}"], "holdout.jsonl", "JSON Lines"),
    (["metrics", "--predictions", "{predictions.json}", "--holdout", "{predictions.json}"], "predictions.json", "eval"),
    (
        ["metrics", "--predictions", "{no_predictions.json}", "--holdout", "{holdout.jsonl}"],
        "no_predictions",
        "detailed",
    ),
    (["metrics", "--predictions", "{a_folder.jsonl}", "--holdout", "{holdout.jsonl}"], "a_folder.jsonl", "folder"),
    (["report", "{missing.jsonl}", "--holdout", "{holdout.jsonl}", "--out", "{out}"], "missing.jsonl", "no such"),
    (
        ["eval", "--judge", "answer-key:", "--holdout", "{predictions.json}", "--out", "{out}"],
        "predictions.json",
        "eval log",
    ),
    (["judge", "--pair-json", "{missing.jsonl}"], "missing.jsonl", "no such file"),
    (["judge", "--pair-json", "{latin1.jsonl}"], "latin1.jsonl", "not UTF-8"),
    (
        ["judge", "--pair-json", "{pair.json}", "--system-prompt-file", "{prompt_latin1.md}"],
        "prompt_latin1.md",
        "not UTF-8",
    ),
    (["train", "sft", "--config", "{missing.jsonl}"], "missing.jsonl", "not found"),
    (["train", "sft", "--config", "{a_folder.jsonl}"], "a_folder.jsonl", "not a file"),
]


@pytest.mark.parametrize(("args", "names", "says"), CASES, ids=[" ".join(c[0][:2]) + f" {c[1]}" for c in CASES])
def test_the_command_prints_one_red_line_and_exits_2(
    args: list[str], names: str, says: str, bad_files: dict[str, Path], tmp_path: Path
) -> None:
    folder = next(iter(bad_files.values())).parent
    filled = [a.format(out=tmp_path / "out") if a == "{out}" or a.startswith("{out}") else a for a in args]
    filled = [str(folder / a[1:-1]) if a.startswith("{") and a.endswith("}") else a for a in filled]
    result = _biasjudge(*filled, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    # Progress lines may come first; the error is one line, the last.
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.strip().endswith(errors[0]), result.stderr
    assert names in errors[0] and says in errors[0], errors[0]


def test_bom_and_crlf_holdout_gives_the_same_metrics(jfs: Path, tmp_path: Path) -> None:
    holdout = jfs / "eval_set_unlabeled.jsonl"
    odd = tmp_path / "holdout.jsonl"
    odd.write_bytes(b"\xef\xbb\xbf" + holdout.read_bytes().replace(b"\n", b"\r\n"))
    log = str(jfs / "eval-results" / "base_gemma4_e4b_verdicts.json")
    clean = _biasjudge("metrics", "--predictions", log, "--holdout", str(holdout), "--json", cwd=tmp_path)
    unusual = _biasjudge("metrics", "--predictions", log, "--holdout", str(odd), "--json", cwd=tmp_path)
    assert clean.returncode == 0 and unusual.returncode == 0, unusual.stderr
    assert json.loads(unusual.stdout) == json.loads(clean.stdout)
    assert json.loads(clean.stdout)  # a table with values, not an empty one


@pytest.mark.parametrize(("data", "says"), [(b"\xff{}", "<stdin>:1: not UTF-8"), (b'{"a": 1}', "field 'pair_id'")])
def test_a_bad_pair_on_stdin_is_one_red_line(data: bytes, says: str, tmp_path: Path) -> None:
    code = "from biasjudge.cli.main import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "judge", "--pair-json", "-"],
        input=data, capture_output=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    stderr = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in stderr and says in stderr, stderr
