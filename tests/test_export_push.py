"""`biasjudge export push`: what a push would upload, and every failure before and at the Hub as one
line with exit 2. There is no Hub here (no internet): the network paths are the ones that can run
offline (HF_HUB_OFFLINE, an endpoint nothing listens on) and a loopback server that refuses the
token as the Hub does (HTTP 401). The upload itself is not exercised."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from biasjudge.errors import ConfigError
from biasjudge.judge.shipped import shipped_dir
from biasjudge.train.export import plan_push
from http_stub import Reply, stub_server
from llama_server import free_port

pytest.importorskip("huggingface_hub", reason="the hub extra is not installed")

REPO = "someone/biasjudge-test"


def _push(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`biasjudge export push ...` through the real entry point (its error handling included)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    code = "from biasjudge.cli.main import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, "export", "push", *args],
        capture_output=True, text=True, env={**base, **env}, timeout=120, check=False,
    )  # fmt: skip


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def adapter_folder(tmp_path: Path) -> Path:
    """A PEFT adapter folder as training leaves it (with a checkpoint and a hidden file that stay behind)."""
    folder = tmp_path / "adapter"
    (folder / "checkpoint-10").mkdir(parents=True)
    (folder / "checkpoint-10" / "optimizer.pt").write_bytes(b"x" * 64)
    (folder / ".cache").write_text("scratch")
    (folder / "adapter_config.json").write_text('{"r": 8}')
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 128)
    (folder / "MODEL_CARD.md").write_text("---\nlicense: gemma\n---\n# a judge\n")
    return folder


def test_the_plan_uploads_the_model_and_the_card_as_readme(adapter_folder: Path) -> None:
    plan = plan_push(adapter_folder, REPO, private=True)
    assert plan.kind == "PEFT adapter" and plan.private
    assert [name for name, _ in plan.files] == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert dict(plan.files)["README.md"].name == "MODEL_CARD.md"
    assert plan.total_bytes == sum(p.stat().st_size for _, p in plan.files)
    # README.md wins over MODEL_CARD.md when a folder has both.
    (adapter_folder / "README.md").write_text("# the hub card\n")
    assert dict(plan_push(adapter_folder, REPO).files)["README.md"].name == "README.md"


def test_a_folder_without_a_card_or_a_model_is_refused_before_the_network(adapter_folder: Path) -> None:
    (adapter_folder / "MODEL_CARD.md").unlink()
    with pytest.raises(ConfigError, match=r"has no model card \(README\.md or MODEL_CARD\.md\).*biasjudge export card"):
        plan_push(adapter_folder, REPO)
    (adapter_folder / "README.md").write_text("  \n")
    with pytest.raises(ConfigError, match=r"README\.md: is empty"):
        plan_push(adapter_folder, REPO)
    (adapter_folder / "README.md").write_text("# card\n")
    (adapter_folder / "adapter_model.safetensors").unlink()
    with pytest.raises(ConfigError, match=f"no model to push to {REPO}"):
        plan_push(adapter_folder, REPO)
    with pytest.raises(ConfigError, match="not a Hugging Face repo id"):
        plan_push(adapter_folder, "not a/valid//id")


def test_dry_run_lists_the_shipped_judge_without_a_token_or_network() -> None:
    # An endpoint nothing listens on and offline mode: a dry run that tried the network would fail.
    env = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    result = _push(str(shipped_dir()), "--repo-id", REPO, "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert listed == ["README.md", "adapter.gguf", "adapter.json", "calibration.json"]
    assert "(from MODEL_CARD.md)" in result.stdout and "would push GGUF" in result.stderr


def test_offline_mode_is_one_line_naming_the_repo(adapter_folder: Path) -> None:
    line = _error_line(_push(str(adapter_folder), "--repo-id", REPO, env={"HF_HUB_OFFLINE": "1", "HF_TOKEN": "hf_x"}))
    assert REPO in line and "offline mode is on (HF_HUB_OFFLINE)" in line


def test_an_unreachable_hub_is_one_line_naming_the_repo_and_the_endpoint(adapter_folder: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    line = _error_line(_push(str(adapter_folder), "--repo-id", REPO, env={"HF_ENDPOINT": endpoint, "HF_TOKEN": "hf_x"}))
    assert f"cannot reach the Hugging Face Hub at {endpoint} to push {REPO}" in line and "ConnectError" in line


def test_a_refused_token_is_one_line_with_the_status(adapter_folder: Path) -> None:
    refuse = {"/api/repos/create": lambda body: Reply(401, {"error": "Invalid credentials in Authorization header"})}
    with stub_server(handlers=refuse) as hub:
        env = {"HF_ENDPOINT": hub.root, "HF_TOKEN": "hf_wrong"}
        line = _error_line(_push(str(adapter_folder), "--repo-id", REPO, "--private", env=env))
        created = hub.seen("/api/repos/create")
    assert f"refused the push to {REPO} (HTTP 401) (check the token" in line
    assert len(created) == 1, created
    body = created[0].body
    assert body["name"] == REPO.split("/")[1] and body["organization"] == REPO.split("/")[0]
    assert body.get("private") is True or body.get("visibility") == "private", body


def test_missing_token_or_card_fail_before_any_request(adapter_folder: Path, tmp_path: Path) -> None:
    with stub_server() as hub:
        # No --token, no HF_TOKEN, and an HF_HOME holding no saved login.
        env = {"HF_ENDPOINT": hub.root, "HF_HOME": str(tmp_path / "hf-home")}
        line = _error_line(_push(str(adapter_folder), "--repo-id", REPO, env=env))
        assert f"no Hugging Face token to push {REPO}" in line
        (adapter_folder / "MODEL_CARD.md").unlink()
        line = _error_line(_push(str(adapter_folder), "--repo-id", REPO, env={**env, "HF_TOKEN": "hf_x"}))
        assert "has no model card" in line
        assert hub.requests == []
