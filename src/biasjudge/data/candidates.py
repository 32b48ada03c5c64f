"""Stage 2: candidate answers to BBQ questions, written by any backend's generate call.

The prompt is the reference's style: a system instruction (prompts/candidate.md: explain in two or
three sentences, then `<answer>A|B|C</answer>`) and a user turn with the context, the question and
the lettered choices (A = ans0, B = ans1, C = ans2).

Generation is resumable: each finished answer is appended (flushed and fsynced) to the output
JSONL, keyed by (question_id, model); a restarted run reads the file back, skips what is done and
generates only the rest. A kill loses at most the batch in flight, never a written answer, and
nothing is written twice.

Cost: with a :class:`~biasjudge.backends.costs.CostControl` every call is booked in its ledger (stage
`candidates`, key question_id), a budget stops the run before a call that could cross it (the
answers so far are kept; :class:`~biasjudge.backends.costs.BudgetReached` is raised), and a dry run
estimates the calls of the unanswered questions without making any.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from biasjudge.backends.base import Backend, GenerationParams, PromptRequest
from biasjudge.backends.costs import CostControl, meter_for
from biasjudge.errors import ConfigError
from biasjudge.io import JsonlAppender, read_records
from biasjudge.prompts import load_prompt
from biasjudge.records import CandidateResponse, ChatMessage, Question

LETTERS = ("A", "B", "C")


def candidate_user_message(question: Question) -> str:
    """The user turn: context, question, and the three lettered choices."""
    choices = "\n".join(f"{letter}. {text}" for letter, text in zip(LETTERS, question.answers, strict=True))
    return f"Context: {question.context.strip()}\n\nQuestion: {question.question.strip()}\n\nChoices:\n{choices}"


def candidate_messages(question: Question, *, system_prompt: str | None = None) -> list[ChatMessage]:
    """System instruction (default: prompts/candidate.md) and the user turn for one question."""
    system = load_prompt("candidate") if system_prompt is None else system_prompt
    return [
        ChatMessage(role="system", content=system.strip()),
        ChatMessage(role="user", content=candidate_user_message(question)),
    ]


def _candidate_key(c: CandidateResponse) -> tuple[str, str]:
    return (c.question_id, c.model)


def _unique(questions: Iterable[Question]) -> list[Question]:
    seen: dict[str, Question] = {}
    for q in questions:
        seen.setdefault(q.question_id, q)
    return list(seen.values())


def generate_candidates(
    questions: Sequence[Question],
    backend: Backend,
    out_path: str | Path,
    *,
    model_name: str,
    params: GenerationParams,
    batch_size: int = 8,
    system_prompt: str | None = None,
    progress: bool = True,
    cost: CostControl | None = None,
) -> list[CandidateResponse]:
    """Answer every question with `backend`, appending each answer to `out_path` as it is done.

    Returns the candidates of `questions` by `model_name` (those already in the file and the new
    ones), in question order. Answers in the file for other questions or models are kept as they are.
    In a dry run (`cost.dry_run`) nothing is generated or written: the estimate goes to
    `cost.estimates` and the answers already in the file are returned.

    Args:
        questions: the questions to answer (a repeated question_id is answered once).
        backend: anything with the Backend protocol's `generate`.
        out_path: JSONL file of CandidateResponse records; created or resumed.
        model_name: value of the `model` field (the resume key is (question_id, model_name)).
        params: sampling settings passed to every generate call.
        batch_size: prompts per generate call.
        system_prompt: replaces prompts/candidate.md.
        progress: show a progress bar on stderr.
        cost: ledger, budget and dry run (:mod:`biasjudge.backends.costs`); None books nothing.

    Raises:
        BudgetReached: the budget stopped the run (everything answered before is in the file).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    todo_all = _unique(questions)
    meter = meter_for(backend, "candidates", cost)

    def request(q: Question) -> PromptRequest:
        return PromptRequest(messages=tuple(candidate_messages(q, system_prompt=system_prompt)))

    if meter.dry_run:  # read what is done, write nothing
        path = Path(out_path)
        existing = (
            read_records(path, CandidateResponse, allow_empty=True, skip_invalid=True).records if path.exists() else []
        )
        done = {_candidate_key(c): c for c in existing}
        meter.estimate([request(q) for q in todo_all if (q.question_id, model_name) not in done], params)
        return [done[(q.question_id, model_name)] for q in todo_all if (q.question_id, model_name) in done]
    with JsonlAppender(out_path, CandidateResponse, key=_candidate_key) as out:
        todo = [q for q in todo_all if (q.question_id, model_name) not in out]
        generated = meter.generations(
            todo,
            request=request,
            key=lambda q: q.question_id,
            params=params,
            batch_size=batch_size,
            description=f"candidates ({model_name})",
            total=len(todo_all),
            progress=progress,
        )
        for question, gen in generated:
            out.append(
                CandidateResponse(
                    question_id=question.question_id, model=model_name, text=gen.text, finish_reason=gen.finish_reason
                )
            )
        return [out.done[(q.question_id, model_name)] for q in todo_all]
