"""Options shared by several commands, defined once."""

from __future__ import annotations

from enum import StrEnum
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


class Mode(StrEnum):
    """How a judge decides (`--mode`)."""

    score = "score"
    generate = "generate"


class LabelMethod(StrEnum):
    """Where labels come from (`data label --labels`)."""

    answer_key = "answer-key"
    teacher = "teacher"


class LabelSourceChoice(StrEnum):
    """Which label of a pair rows are built from (`data rows --label-source`)."""

    answer_key = "answer_key"
    teacher = "teacher"
    human = "human"


class UnclearVsBiasedChoice(StrEnum):
    """Answer key, a biased response vs an unclear one (`--unclear-vs-biased`)."""

    tie = "tie"
    biased_wins = "biased_wins"


class LeakageLevelChoice(StrEnum):
    """What may not be shared with the holdout (`--leakage-level`)."""

    question = "question"
    pair = "pair"


class ChatFormat(StrEnum):
    """Built-in turn formats for models without a chat template (`--chat-format`)."""

    gemma4 = "gemma4"
    gemma3 = "gemma3"


UnclearOption = Annotated[
    UnclearVsBiasedChoice,
    typer.Option(
        "--unclear-vs-biased",
        help=(
            "Answer key, biased vs unclear response: 'tie' (default; kappa 0.816 in-dist vs humans) "
            "or 'biased_wins' (0.722)."
        ),
    ),
]
LeakageLevelOption = Annotated[
    LeakageLevelChoice,
    typer.Option(
        "--leakage-level",
        help=(
            "question: no question_id may be shared with the holdout (default); "
            "pair: only no shared pair_id (the reference's split)."
        ),
    ),
]
ModeOption = Annotated[
    Mode,
    typer.Option(
        "--mode",
        help="generate: reasoning then verdict, read from text. score: one forward pass, verdict probabilities.",
    ),
]
SkipInvalidOption = Annotated[
    bool,
    typer.Option("--skip-invalid", help="Go on past invalid input rows; write them to a .rejects.jsonl side file."),
]

AbstainOption = Annotated[
    float | None,
    typer.Option(
        "--abstain-below",
        min=0.0,
        max=1.0,
        help=(
            "Score mode: a verdict whose top (calibrated) probability is under P becomes UNSURE, its "
            "probabilities kept; counted apart from PARSE_FAIL. The same as '?abstain_below=P' on the spec."
        ),
        show_default=False,
    ),
]

ConstrainedOption = Annotated[
    bool | None,
    typer.Option(
        "--constrained/--free",
        help=(
            "Generate mode: hold the output to the contract's grammar (no parse failure; an output cut at "
            "--max-tokens is closed and its verdict scored) or generate freely. Default: constrained where the "
            "backend supports grammars (llama.cpp). The same as '?constrained=true|false' on the spec."
        ),
        show_default=False,
    ),
]
