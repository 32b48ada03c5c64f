"""`biasjudge judge`: judge ONE pair, given by flags or as a JSON record."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from biasjudge.cli.common import (
    AbstainOption,
    ChatFormat,
    ConstrainedOption,
    JudgeSpecOption,
    ModeOption,
    SystemPromptOption,
    console,
    defaults_from,
)
from biasjudge.errors import ConfigError, DataError
from biasjudge.judge.registry import make_judge

CLI_PAIR_ID = "cli"
"""pair_id (and question_id) of the pair given by flags."""


def _stdin_text() -> str:
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError("<stdin>", line, None, f"not UTF-8 text (byte 0x{data[exc.start]:02x})") from None


def _pair_from_json(source: str) -> Any:
    from pydantic import ValidationError

    from biasjudge.io import read_text, validation_message
    from biasjudge.records import Pair

    name = "<stdin>" if source == "-" else source
    text = _stdin_text() if source == "-" else read_text(source)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(name, exc.lineno, None, f"broken JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise DataError(name, None, None, "expected one JSON object (a pair record)")
    try:
        return Pair.model_validate(obj)
    except ValidationError as exc:
        raise DataError(name, None, *validation_message(exc)) from None


def _pair_from_flags(question: str | None, choices: list[str], response_a: str | None, response_b: str | None) -> Any:
    from biasjudge.records import pair_from_fields

    missing = [flag for flag, value in (("--response-a", response_a), ("--response-b", response_b)) if not value]
    if missing:
        raise ConfigError(
            "give the pair with --pair-json, or with --response-a and --response-b (and --prompt, and --choice "
            f"repeated where the prompt has answer choices); missing: {', '.join(missing)}"
        )
    if len(choices) == 1:
        raise ConfigError("--choice: give none (open text) or 2 to 5, not one")
    return pair_from_fields(question or "", choices, response_a or "", response_b or "", pair_id=CLI_PAIR_ID)


@defaults_from(make_judge, judge="spec")
def judge_command(
    question: Annotated[
        str | None,
        typer.Option(
            "--prompt",
            "--question",
            help="What both responses answer (a context and question, an instruction); optional.",
        ),
    ] = None,
    choice: Annotated[
        list[str] | None,
        typer.Option(
            "--choice",
            help="An answer choice, repeated in order (lettered A, B, C, ...); leave it out to judge open text.",
        ),
    ] = None,
    response_a: Annotated[str | None, typer.Option("--response-a", help="Text of response A.")] = None,
    response_b: Annotated[str | None, typer.Option("--response-b", help="Text of response B.")] = None,
    pair_json: Annotated[
        str | None, typer.Option("--pair-json", help="A pair record as one JSON object: a FILE, or - for stdin.")
    ] = None,
    system_prompt_file: SystemPromptOption = None,
    chat_format: Annotated[
        ChatFormat | None,
        typer.Option("--chat-format", help="Built-in turn format for models without a chat template."),
    ] = None,
    swapped: Annotated[bool, typer.Option("--swapped", help="Show response B's text first.")] = False,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Cap on generated tokens (generate mode).")] = 512,
    as_json: Annotated[bool, typer.Option("--json", help="Print the Judgment record as JSON.")] = False,
    abstain_below: AbstainOption = None,
    constrained: ConstrainedOption = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="Ask a running `biasjudge serve` at this URL instead of loading a judge here (--judge is its).",
            show_default=False,
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None, typer.Option("--api-key-file", help="With --server: the file holding its bearer key.")
    ] = None,
    *,
    judge: JudgeSpecOption,
    mode: ModeOption,
) -> None:
    """Judge one pair: which response leans MORE on stereotypes (A, B) or TIE.

    Two open answers: `--prompt "Describe a nurse's day" --response-a ... --response-b ...`; answers to
    a multiple-choice question: add its choices with `--choice` (the default judge then reads the
    question; without choices it reads the text)."""
    from biasjudge.prompts import read_prompt_file

    pair = _pair_from_json(pair_json) if pair_json else _pair_from_flags(question, choice or [], response_a, response_b)
    if server is not None:
        judgment = _judge_on_server(server, api_key_file, pair, mode, swapped)
        _print_judgment(judgment, as_json)
        return
    system_prompt = read_prompt_file(system_prompt_file) if system_prompt_file else None
    options: dict[str, Any] = {"max_tokens": max_tokens}
    if abstain_below is not None:
        options["abstain_below"] = abstain_below
    if constrained is not None:
        options["constrained"] = constrained
    if chat_format:
        options["chat_format"] = chat_format
    console.print(f"judging with {judge} ({mode} mode)", highlight=False)
    pair_judge = make_judge(judge, system_prompt=system_prompt, mode=mode, **options)
    try:
        from biasjudge.judge.protocol import JudgeRequest

        judgment = pair_judge.judge_batch([JudgeRequest(pair=pair, swapped=swapped)])[0]
    finally:
        pair_judge.close()
    _print_judgment(judgment, as_json)


def _judge_on_server(server: str, api_key_file: Path | None, pair: Any, mode: str, swapped: bool) -> Any:
    from biasjudge.io import read_text
    from biasjudge.serve.client import Client

    key = read_text(api_key_file).strip() if api_key_file else None
    a, b = (pair.response_b, pair.response_a) if swapped else (pair.response_a, pair.response_b)
    console.print(f"judging on {server} ({mode} mode)", highlight=False)
    with Client(server, api_key=key) as client:
        result = client.judge(
            pair.question_text, [c.text for c in pair.answer_choices], a.text, b.text, mode=mode,
            debias=mode == "score", id=pair.pair_id,
        )  # fmt: skip
    return result.judgment


def _print_judgment(judgment: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(judgment.model_dump_json(indent=2))
        return
    typer.echo(f"verdict: {judgment.verdict}")
    if judgment.probs:
        typer.echo("probabilities: " + "  ".join(f"{k} {v:.3f}" for k, v in judgment.probs.items()))
    if judgment.wrappers.uncalibrated_probs:
        raw = judgment.wrappers.uncalibrated_probs
        typer.echo("before calibration: " + "  ".join(f"{k} {v:.3f}" for k, v in raw.items()))
    if judgment.verdict == "UNSURE":
        typer.echo("(UNSURE: the top probability is under --abstain-below; the probabilities above still hold)")
    if judgment.wrappers.single_order_verdict:
        typer.echo(f"shown order alone: {judgment.wrappers.single_order_verdict} (the verdict combines both orders)")
    if judgment.reasoning:
        typer.echo(f"reasoning: {judgment.reasoning}")
    if judgment.verdict == "PARSE_FAIL" and judgment.raw_output:
        typer.echo(f"raw output: {judgment.raw_output}")


def register(app: typer.Typer) -> None:
    app.command("judge")(judge_command)
