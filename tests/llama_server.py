"""A real OpenAI-compatible server for tests: llama-cpp-python's, on loopback, running a GGUF.

`llama_server_process` starts `python -m llama_cpp.server` on a free port, waits until it answers
`/v1/models`, yields its `/v1` URL and stops it afterwards. Its log goes to a file, not a pipe:
llama.cpp logs enough to fill a pipe and block. The `llama_server` fixture (conftest.py) is one
such server per test session; tests that need other server flags start their own.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def llama_server_process(gguf: Path, log_dir: Path, *extra_args: str, wait_s: float = 120) -> Iterator[str]:
    """Run llama-cpp-python's server on `gguf` (with `extra_args`) and yield its `/v1` URL."""
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf)]
    command += ["--host", "127.0.0.1", "--port", str(port), *extra_args]
    log_path = log_dir / "llama_server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + wait_s
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log_path.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer /v1/models within {wait_s:.0f} s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
