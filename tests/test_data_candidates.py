"""Stage 2: the candidate prompt, and generation that resumes after a kill without loss or repeats."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from biasjudge.backends.base import Backend, Generation, GenerationParams, PromptRequest
from biasjudge.data.bbq import load_sample
from biasjudge.data.candidates import candidate_messages, generate_candidates
from biasjudge.data.classify import parse_answer_letter
from biasjudge.errors import BackendError
from biasjudge.io import read_records
from biasjudge.prompts import load_prompt
from biasjudge.records import CandidateResponse, Question

PARAMS = GenerationParams(temperature=0.0, max_tokens=64)


class LetterBackend:
    """Stands in for a model: answers each prompt with a letter fixed by a hash of the prompt."""

    spec = "test:letters"

    def __init__(self, fail_after_calls: int | None = None) -> None:
        self.calls = 0
        self.prompts: list[str] = []
        self.fail_after_calls = fail_after_calls

    def generate(self, requests: Sequence[PromptRequest], params: GenerationParams) -> list[Generation]:
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt  # what a Ctrl-C in the middle of a run looks like
        self.calls += 1
        out = []
        for req in requests:
            user = req.messages[-1].content
            self.prompts.append(user)
            letter = "ABC"[int(hashlib.sha1(user.encode()).hexdigest(), 16) % 3]
            out.append(Generation(text=f"It says so.\n<answer>{letter}</answer>", finish_reason="stop"))
        return out

    def score(self, requests: Sequence[PromptRequest], choices: Sequence[str]) -> list[dict[str, float]]:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def questions(jfs: Path) -> list[Question]:
    return load_sample(jfs / "bbq_sample.jsonl")[:40]


def test_backend_stand_in_satisfies_the_protocol() -> None:
    assert isinstance(LetterBackend(), Backend)


def test_candidate_prompt_letters_the_choices(questions: list[Question]) -> None:
    q = questions[0]
    system, user = candidate_messages(q)
    assert (system.role, user.role) == ("system", "user")
    assert system.content == load_prompt("candidate").strip()
    assert "<answer>A</answer>" in system.content
    assert q.context.strip() in user.content and q.question.strip() in user.content
    assert f"A. {q.ans0}\nB. {q.ans1}\nC. {q.ans2}" in user.content
    assert candidate_messages(q, system_prompt="Answer.")[0].content == "Answer."


def test_generates_every_question_once(tmp_path: Path, questions: list[Question]) -> None:
    out = tmp_path / "candidates.jsonl"
    backend = LetterBackend()
    got = generate_candidates(questions + questions[:3], backend, out, model_name="m1", params=PARAMS, batch_size=6)
    assert [c.question_id for c in got] == [q.question_id for q in questions]
    assert backend.calls == 7  # 40 unique questions in batches of 6
    assert len(read_records(out, CandidateResponse).records) == 40
    assert all(c.model == "m1" and c.finish_reason == "stop" for c in got)
    by_id = {q.question_id: q for q in questions}
    assert all(parse_answer_letter(c.text, by_id[c.question_id]) in ("A", "B", "C") for c in got)


def test_resumes_after_an_interrupt_without_loss_or_repeats(tmp_path: Path, questions: list[Question]) -> None:
    out = tmp_path / "candidates.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_candidates(
            questions, LetterBackend(fail_after_calls=3), out, model_name="m1", params=PARAMS, batch_size=4
        )
    written = read_records(out, CandidateResponse).records
    assert len(written) == 12  # three finished batches of 4, nothing of the fourth

    second = LetterBackend()
    got = generate_candidates(questions, second, out, model_name="m1", params=PARAMS, batch_size=4)
    assert len(second.prompts) == 40 - 12  # only the missing ones were asked for
    rows = read_records(out, CandidateResponse, unique_key="question_id").records
    assert sorted(r.question_id for r in rows) == sorted(q.question_id for q in questions)
    assert [c.question_id for c in got] == [q.question_id for q in questions]
    # A third run has nothing left to do; another model is a separate key.
    third = LetterBackend()
    generate_candidates(questions, third, out, model_name="m1", params=PARAMS)
    assert third.calls == 0
    generate_candidates(questions[:5], third, out, model_name="m2", params=PARAMS)
    assert Counter(r.model for r in read_records(out, CandidateResponse).records) == {"m1": 40, "m2": 5}


CHILD = textwrap.dedent(
    """
    import sys, time
    from biasjudge.backends.base import Generation, GenerationParams
    from biasjudge.data.bbq import load_sample
    from biasjudge.data.candidates import generate_candidates

    class Slow:
        spec = "test:slow"
        def generate(self, requests, params):
            time.sleep(0.05)
            return [Generation(text=f"<answer>A</answer> {r.messages[-1].content[:20]}", finish_reason="stop")
                    for r in requests]

    questions = load_sample(sys.argv[1])[:200]
    generate_candidates(questions, Slow(), sys.argv[2], model_name="slow", params=GenerationParams(),
                        batch_size=2, progress=False)
    """
)


def test_resumes_after_a_hard_kill(tmp_path: Path, jfs: Path) -> None:
    out = tmp_path / "candidates.jsonl"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(jfs / "bbq_sample.jsonl"), str(out)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= 20:
                break
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    n_before = len(read_records(out, CandidateResponse).records)
    assert 20 <= n_before < 200

    questions = load_sample(jfs / "bbq_sample.jsonl")[:200]
    backend = LetterBackend()
    generate_candidates(questions, backend, out, model_name="slow", params=PARAMS, progress=False)
    assert len(backend.prompts) == 200 - n_before
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [row["question_id"] for row in lines]
    assert len(ids) == len(set(ids)) == 200  # nothing lost, nothing twice
    assert set(ids) == {q.question_id for q in questions}


def test_backend_returning_too_few_generations_is_an_error(tmp_path: Path, questions: list[Question]) -> None:
    class Short(LetterBackend):
        def generate(self, requests: Sequence[PromptRequest], params: GenerationParams) -> list[Generation]:
            return super().generate(requests, params)[:-1]

    with pytest.raises(BackendError, match="returned 3 generations for 4 prompts"):
        generate_candidates(questions[:4], Short(), tmp_path / "c.jsonl", model_name="m", params=PARAMS, batch_size=4)


@pytest.mark.slow
def test_embedded_model_writes_candidates(tmp_path: Path, questions: list[Question], gguf_model: Path) -> None:
    from biasjudge.backends.registry import make_backend

    backend = make_backend(f"llamacpp:{gguf_model}")
    try:
        got = generate_candidates(
            questions[:1], backend, tmp_path / "c.jsonl", model_name="gemma-3-270m",
            params=GenerationParams(max_tokens=32),
        )  # fmt: skip
    finally:
        backend.close()
    assert len(got) == 1 and got[0].finish_reason in ("stop", "length")
    (written,) = read_records(tmp_path / "c.jsonl", CandidateResponse).records
    assert written == got[0]  # what was returned is what was written
    assert (written.question_id, written.model) == (questions[0].question_id, "gemma-3-270m")
    assert written.text.strip()  # the model's text, kept
