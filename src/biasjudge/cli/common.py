"""Options shared by several commands, defined once."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from biasjudge.backends.costs import CostControl

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
            "Judge spec. 'reader:' (default): reads the question (a trained model), then each response, "
            "and says why; 'llamacpp:embedded': the pairwise LoRA judge, both orders combined; "
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

# --------------------------------------------------------------------------- cost control (biasjudge.backends.costs)

LedgerOption = Annotated[
    Path | None,
    typer.Option(
        "--ledger",
        help=(
            "Cost ledger: JSONL, one line per model call (stage, model, tokens, USD, time, key), appended to. "
            "Default: cost_ledger.jsonl beside --out, so the stages of one folder share it."
        ),
        show_default=False,
    ),
]
BudgetOption = Annotated[
    float | None,
    typer.Option(
        "--budget-usd",
        min=0.0,
        help=(
            "Stop before a call that could take the ledger's total (every stage, every run) past this many USD. "
            "Work done is kept; the exit status is 3; rerun with a higher budget to go on."
        ),
        show_default=False,
    ),
]
DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Estimate the calls, tokens and USD of what is left to do, then stop: no model call, nothing written.",
    ),
]
PricesOption = Annotated[
    Path | None,
    typer.Option(
        "--prices",
        help=(
            "YAML of model prices ('models: {NAME: {input: USD_PER_1M, output: USD_PER_1M}}') laid over the "
            "shipped biasjudge/configs/prices.yaml. An openai: model without a price is booked at $0 with a "
            "warning, and is an error with --budget-usd."
        ),
        show_default=False,
    ),
]


@dataclass(frozen=True)
class CostOptions:
    """The cost options of a command that calls a model (an option group, see :func:`option_groups`)."""

    ledger: LedgerOption = None
    budget_usd: BudgetOption = None
    dry_run: DryRunOption = False
    prices: PricesOption = None

    def control(self, out: Path) -> CostControl:
        """The CostControl of these options (the ledger defaults to cost_ledger.jsonl beside `out`)."""
        from biasjudge.backends.costs import CostControl, load_prices

        return CostControl(
            ledger=self.ledger if self.ledger is not None else out.parent / "cost_ledger.jsonl",
            prices=load_prices(self.prices),
            budget_usd=self.budget_usd,
            dry_run=self.dry_run,
        )


# --------------------------------------------------------------------------- option groups


def option_groups(command: Callable[..., None]) -> Callable[..., None]:
    """Options that several commands share, declared once as a dataclass (an option group, such as
    :class:`CostOptions`): each parameter of `command` typed with such a dataclass is spelled out, in its
    place, as the group's fields (their typer options and defaults), and `command` gets the group built
    from them. What Typer shows (names, order, help, defaults) is as if the fields were written there."""
    signature = inspect.signature(command, eval_str=True)
    groups: dict[str, list[str]] = {}
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        group = parameter.annotation
        if not (isinstance(group, type) and dataclasses.is_dataclass(group)):
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            continue
        hints = get_type_hints(group, include_extras=True)
        fields = dataclasses.fields(group)
        groups[parameter.name] = [f.name for f in fields]
        parameters += [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name], default=default)
            for f in fields
            for default in [inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default]
        ]

    @functools.wraps(command)
    def run(**options: Any) -> None:
        for name, fields in groups.items():
            options[name] = signature.parameters[name].annotation(**{f: options.pop(f) for f in fields})
        command(**options)

    run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": signature.return_annotation}
    return run


@contextmanager
def cost_session(control: CostControl) -> Iterator[CostControl]:
    """Hold the ledger for the block; print what was spent (or estimated) after it.

    A run the budget stopped prints why and exits with status 3 (`costs.BUDGET_EXIT_CODE`).
    """
    from biasjudge.backends.costs import BUDGET_EXIT_CODE, BudgetReached

    try:
        with control:
            yield control
    except BudgetReached as exc:
        print_costs(control)
        console.print(f"[yellow]stopped:[/yellow] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(BUDGET_EXIT_CODE) from None
    print_costs(control)


def print_costs(control: CostControl) -> None:
    """A dry run's estimates as a table, or one line: this run's calls and USD, and the ledger's total."""
    from biasjudge.backends.costs import ledger_totals

    budget = f" of --budget-usd {control.budget_usd:g}" if control.budget_usd is not None else ""
    if control.dry_run:
        console.print(f"dry run: no model called, nothing written (ledger {control.ledger})", highlight=False)
        for e in control.estimates:
            if e.priced:
                usd = f"at most ${e.usd_max:.4f}"
                if e.max_attempts > 1:
                    usd += f" (${e.usd_worst:.4f} if every item takes all {e.max_attempts} attempts)"
                if e.usd_expected is not None:
                    usd += (
                        f", expected ${e.usd_expected:.4f} (mean output {e.mean_completion_tokens:.0f} tokens so far)"
                    )
            else:
                usd = "USD unknown (no price for this model)"
            console.print(
                f"  {e.stage} ({e.model}): {e.calls} calls, {e.prompt_tokens} prompt tokens, "
                f"at most {e.max_completion_tokens} output tokens; {usd}",
                highlight=False,
            )
        left = ""
        if control.budget_usd is not None:
            need = sum(e.usd_max for e in control.estimates)
            verdict = "fits" if control.spent + need <= control.budget_usd else "does NOT fit"
            left = f"; at most ${need:.4f} more {verdict} in --budget-usd {control.budget_usd:g}"
        console.print(f"ledger so far: ${control.spent:.4f}{left}", highlight=False)
        return
    now = ledger_totals(control.made)
    note = f" ({now.unpriced_calls} of an unpriced model)" if now.unpriced_calls else ""
    booked = (
        f"; {control.booked_in_flight} call(s) a killed run had in flight booked at their bound"
        if control.booked_in_flight
        else ""
    )
    console.print(
        f"cost: {now.calls} calls now{note}, {now.prompt_tokens} prompt + {now.completion_tokens} completion tokens, "
        f"${now.usd:.4f}; ledger {control.ledger} total ${control.spent:.4f}{budget}{booked}",
        highlight=False,
    )
