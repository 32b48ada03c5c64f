"""Options shared by several commands, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)
"""Progress and messages go to stderr; stdout stays clean for --json output."""

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder with bbq/ and judge-from-scratch/ (default: $BIASJUDGE_DATA_DIR, else ../shared/data).",
        show_default=False,
    ),
]
JudgeSpecOption = Annotated[
    str,
    typer.Option(
        "--judge",
        "-j",
        help=(
            "Judge spec. 'llamacpp:embedded' (default): biasjudge's trained judge, both orders combined; "
            "'llamacpp:embedded-base': the untrained Gemma 3 270M; 'llamacpp:PATH.gguf', "
            "'hf:MODEL_ID_OR_DIR', 'hf:FILE.gguf', 'openai:http://HOST/v1#MODEL', 'vllm:MODEL', 'hybrid:', "
            "'answer-key:', 'always-tie:', 'random:'. Options ride after '?': "
            "'llamacpp:embedded-base?adapter=ADAPTER.gguf', 'hf:DIR?adapter=PEFT_DIR', '...?order=single'."
        ),
    ),
]
SystemPromptOption = Annotated[
    Path | None,
    typer.Option(
        "--system-prompt-file",
        help="System prompt sent byte for byte (the published checkpoints need their own). Default: biasjudge's.",
    ),
]
ModeOption = Annotated[
    str,
    typer.Option(
        "--mode",
        help="generate: reasoning then verdict, read from text. score: one forward pass, verdict probabilities.",
    ),
]
SkipInvalidOption = Annotated[
    bool,
    typer.Option("--skip-invalid", help="Go on past invalid input rows; write them to a .rejects.jsonl side file."),
]
