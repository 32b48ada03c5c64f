"""Prompt texts shipped with biasjudge, as package data.

- judge_system.md: the default system prompt of an untrained or prompted judge (written for this project).
- judge_compact.md: the one-line system prompt the shipped trained judge learnt with (short, because
  every training row and every judged prompt carries it; the user turn already states the task).
- teacher.md: the rubric a teacher model labels pairs with.
- candidate.md: the instruction given to candidate models answering BBQ questions.
- synth.md: the instruction a model writes hard negatives (plausible, wrong judge reasoning) with.

The published judge-from-scratch checkpoints were trained with a different system prompt; pass
that file byte for byte with `--system-prompt-file` when running them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from biasjudge.errors import ConfigError

PROMPT_NAMES = ("judge_system", "judge_compact", "teacher", "candidate", "synth")


def load_prompt(name: str) -> str:
    """Text of a shipped prompt by name (`judge_system`, `teacher`, `candidate`)."""
    if name not in PROMPT_NAMES:
        raise ConfigError(f"unknown prompt {name!r}; known: {', '.join(PROMPT_NAMES)}")
    return resources.files(__package__).joinpath(f"{name}.md").read_text(encoding="utf-8")


def read_prompt_file(path: str | Path) -> str:
    """A user's prompt file, byte for byte (no stripping: checkpoints are sensitive to it).

    The one reader of prompt files (`judge`, `eval` and `data rows` all call it). Only a UTF-8
    byte-order mark is dropped: it is never part of a prompt. A missing file, a folder or bytes
    that are not UTF-8 raise a DataError naming the file.
    """
    from biasjudge.io import read_text

    return read_text(path)
