"""Options shared by several commands, defined once."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from biasjudge.config import ConfigModel, field_flags
from biasjudge.dataset.build import LeakageLevel
from biasjudge.eval.settings import JudgingSettings
from biasjudge.records import JudgeMode

if TYPE_CHECKING:
    from biasjudge.backends.costs import CostControl

C = TypeVar("C", bound=ConfigModel)
F = TypeVar("F", bound=Callable[..., Any])

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


ChatFormat = Literal["gemma4", "gemma3"]
"""Built-in turn formats for models without a chat template (`--chat-format`; prompts.render.TURN_FORMATS)."""


LeakageLevelOption = Annotated[
    LeakageLevel,
    typer.Option(
        "--leakage-level",
        help=(
            "question: no question_id may be shared with the holdout (default); "
            "pair: only no shared pair_id (the reference's split)."
        ),
    ),
]
ModeOption = Annotated[
    JudgeMode,
    typer.Option(
        "--mode",
        help=JudgingSettings.model_fields["mode"].description,  # written once, in the eval's settings
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


CONFIG_FILE_PARAMETER, CONTEXT_PARAMETER = "config_file", "typer_context"
"""The `--config FILE` option a command gets with its stage config (see :func:`option_groups`), and the
context it reads to tell the flags given from the defaults."""


def option_groups(command: Callable[..., None]) -> Callable[..., None]:
    """Options that several commands share, declared once as a dataclass (an option group, such as
    :class:`CostOptions`), and a stage's options generated from its config (a
    :class:`~biasjudge.config.ConfigModel`, as TRL's `TrlParser` does from `SFTConfig`).

    Each parameter of `command` typed with a dataclass group is spelled out, in its place, as the
    group's fields (their typer options and defaults). A parameter typed with a config is
    spelled out as one option per field that a flag can carry (:func:`config_parameters`: the field's
    docstring is the help, its default the default, written nowhere else), plus `--config FILE`: a YAML
    file of the config's values (else its packaged `default_file`, if it names one), which the flags
    given on the command line override. `command` gets the
    group or the validated model, built from them. What Typer shows is as if the fields were written there.
    """
    signature = inspect.signature(command, eval_str=True)
    groups: dict[str, list[str]] = {}
    configs: dict[str, type[ConfigModel]] = {}
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        group = parameter.annotation
        if isinstance(group, type) and issubclass(group, ConfigModel):
            if configs:
                raise TypeError(f"{command.__name__}: one stage config per command, not {parameter.name} too")
            configs[parameter.name] = group
            generated = config_parameters(group)
            groups[parameter.name] = [p.name for p in generated]
            context = inspect.Parameter(CONTEXT_PARAMETER, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
            parameters += [*generated, _config_file_parameter(group), context]
            continue
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
            values = {f: options.pop(f) for f in fields}
            if name in configs:
                context, config_file = options.pop(CONTEXT_PARAMETER), options.pop(CONFIG_FILE_PARAMETER)
                options[name] = _load_stage_config(configs[name], config_file, values, context)
            else:
                options[name] = signature.parameters[name].annotation(**values)
        command(**options)

    run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": signature.return_annotation}
    return run


_FLAG_TYPES = (str, int, float, bool, Path)


def _flag_type(annotation: Any) -> bool:
    """Whether a flag can carry a value of this type: a scalar, a StrEnum or Literal, optional, or a list
    of plain scalars (Typer takes no list of Literals)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return all(isinstance(a, str) for a in args)
    if origin in (Union, UnionType):
        rest = [a for a in args if a is not type(None)]
        return len(rest) == 1 and _flag_type(rest[0])
    if origin is list:
        return len(args) == 1 and get_origin(args[0]) is None and _flag_type(args[0])
    return isinstance(annotation, type) and issubclass(annotation, _FLAG_TYPES)


def config_parameters(model: type[BaseModel]) -> list[inspect.Parameter]:
    """One keyword parameter per field of `model` a flag can carry, as Typer reads them.

    The flags are :func:`~biasjudge.config.field_flags`; the help is the field's docstring; the
    default is the field's.
    Fields of other types (a mapping of bucket targets, say) are set in the YAML file only.
    """
    parameters = []
    for name, field in model.model_fields.items():
        if not _flag_type(field.annotation):
            continue
        required = field.is_required()
        default = inspect.Parameter.empty if required else field.get_default(call_default_factory=True)
        option = typer.Option(*field_flags(name, field), help=field.description, show_default=default is not None)
        annotation = Annotated[field.annotation, option]  # type: ignore[name-defined]
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        )
    return parameters


def _config_file_parameter(model: type[BaseModel]) -> inspect.Parameter:
    option = typer.Option(
        "--config",
        "-c",
        help=f"YAML file of {model.__name__} values (the fields these options set, and any a file alone can "
        "hold); the flags given override it.",
        show_default=False,
    )
    return inspect.Parameter(
        CONFIG_FILE_PARAMETER, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[Path | None, option], default=None
    )


def _load_stage_config(model: type[C], config_file: Path | None, flags: dict[str, Any], context: typer.Context) -> C:
    """`model` from the YAML file (or the model's packaged default file), then the flags given on the
    command line (defaults are the model's own)."""
    from biasjudge.config import load_config

    def given(name: str) -> bool:
        source = context.get_parameter_source(name)
        return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")

    file = config_file if config_file is not None else model.default_file
    return load_config(model, file, {k: v for k, v in flags.items() if file is None or given(k)})


def defaults_from(*sources: Callable[..., Any] | type[BaseModel], **renamed: str) -> Callable[[F], F]:
    """Give each parameter of a command written without a default the default of the parameter (or
    config field) of the same name in `sources`, the library function or config the command hands it
    to, so each default is written once: there. `renamed` maps a command's parameter to its name in the
    sources where the two differ. A parameter no source defaults is an error at import."""

    def defaults(option: str) -> Any:
        name = renamed.get(option, option)
        for source in sources:
            if isinstance(source, type) and issubclass(source, BaseModel):
                field = source.model_fields.get(name)
                if field is not None and not field.is_required():
                    return field.get_default(call_default_factory=True)
                continue
            declared = inspect.signature(source).parameters.get(name)
            if declared is not None and declared.default is not inspect.Parameter.empty:
                return declared.default
        names = ", ".join(getattr(s, "__qualname__", str(s)) for s in sources)
        raise TypeError(f"no default for {name!r} in {names}")

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        parameters = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY, default=defaults(p.name))
            if p.default is inspect.Parameter.empty and p.kind is inspect.Parameter.KEYWORD_ONLY
            else p
            for p in signature.parameters.values()
        ]
        command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        return command

    return decorate


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
