"""`biasjudge train sft | dpo | judge`: fine-tune a judge from a run config (configs/sft.yaml,
configs/dpo.yaml), or rebuild the shipped judge end to end (configs/embedded-judge.yaml).

Thin: load the config (flags override the file), call one trainer, print where the run went.
torch/transformers/trl are imported only when a command runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from biasjudge.cli.common import console, option_groups
from biasjudge.recipes.pairwise import JudgeRecipeConfig
from biasjudge.recipes.reader import ReaderRecipeConfig

if TYPE_CHECKING:
    from biasjudge.train.config import RunConfigBase

C = TypeVar("C", bound="RunConfigBase")

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        help="Run config YAML, or the name of one shipped with biasjudge: sft, sft-cpu, dpo, dpo-cpu.",
    ),
]
OutputDirOption = Annotated[
    Path | None, typer.Option("--output-dir", help="Run folder (overrides output_dir).", show_default=False)
]
MaxStepsOption = Annotated[
    int | None,
    typer.Option("--max-steps", help="Stop after N optimizer steps (overrides trl.max_steps).", show_default=False),
]
TrainFileOption = Annotated[
    Path | None, typer.Option("--train-file", help="Training rows (overrides train_file).", show_default=False)
]
ModelOption = Annotated[
    str | None, typer.Option("--model", help="Base model: hub id, folder, .gguf, or 'embedded'.", show_default=False)
]
LearningRateOption = Annotated[
    float | None, typer.Option("--learning-rate", help="Overrides trl.learning_rate.", show_default=False)
]
NoResumeOption = Annotated[bool, typer.Option("--no-resume", help="Start afresh even if output_dir has checkpoints.")]


def _print_result(kind: str, result: object) -> None:
    console.print(
        f"[green]{kind} done[/green]: {getattr(result, 'global_step', '?')} steps; adapter in "
        f"{getattr(result, 'adapter_dir', '?')}; log {getattr(result, 'log_file', '?')}"
    )
    print(getattr(result, "adapter_dir", ""))


@dataclass(frozen=True)
class RunOptions:
    """The run config of `train sft` / `train dpo` and the flags both override it with (an option group)."""

    config: ConfigOption
    output_dir: OutputDirOption = None
    max_steps: MaxStepsOption = None
    train_file: TrainFileOption = None
    model: ModelOption = None
    learning_rate: LearningRateOption = None

    def load(self, cls: type[C], no_resume: bool, overrides: dict[str, Any]) -> C:
        """The run config: the file, then the flags both commands share, then `overrides`."""
        from biasjudge.train.config import load_run_config

        return load_run_config(
            cls,
            self.config,
            overrides={
                "output_dir": self.output_dir,
                "train_file": self.train_file,
                "model": self.model,
                **overrides,
                "resume": False if no_resume else None,
            },
            trl_overrides={"max_steps": self.max_steps, "learning_rate": self.learning_rate},
        )


@option_groups
def sft_command(run: RunOptions, no_resume: NoResumeOption = False) -> None:
    """Supervised fine-tuning (LoRA; QLoRA on CUDA) on SFT rows; resumes from the newest checkpoint."""
    from biasjudge.train.config import SFTRunConfig
    from biasjudge.train.sft import train_sft

    run_config = run.load(SFTRunConfig, no_resume, {})
    console.print(f"training {run_config.model} on {run_config.train_file} -> {run_config.output_dir}")
    _print_result("sft", train_sft(run_config))


@option_groups
def dpo_command(
    run: RunOptions,
    sft_adapter: Annotated[
        Path | None, typer.Option("--sft-adapter", help="SFT adapter to continue from (overrides sft_adapter).")
    ] = None,
    no_resume: NoResumeOption = False,
) -> None:
    """Preference tuning (DPO) on DPO rows, continuing from the SFT adapter (the reference model)."""
    from biasjudge.train.config import DPORunConfig
    from biasjudge.train.dpo import train_dpo

    run_config = run.load(DPORunConfig, no_resume, {"sft_adapter": sft_adapter})
    console.print(
        f"DPO on {run_config.train_file} from {run_config.sft_adapter or run_config.model} -> {run_config.output_dir}"
    )
    _print_result("dpo", train_dpo(run_config))


@option_groups
def judge_command(
    seed: Annotated[int | None, typer.Option("--seed", help="Overrides trl.seed.", show_default=False)] = None,
    max_steps: MaxStepsOption = None,
    install: Annotated[
        bool, typer.Option("--install", help="Copy adapter, manifest and card into the package (the shipped judge).")
    ] = False,
    *,
    recipe: JudgeRecipeConfig,
) -> None:
    """Rebuild the shipped judge end to end: data, labels, LoRA training, GGUF export, eval, model card.

    Without --config, the shipped judge's recipe (configs/embedded-judge.yaml); the flags override it."""
    from biasjudge.recipes.pairwise import train_judge

    trl_extra = {k: v for k, v in (("seed", seed), ("max_steps", max_steps)) if v is not None}
    if trl_extra:
        recipe = recipe.model_copy(update={"trl": {**recipe.trl, **trl_extra}})
    console.print(f"training the judge -> {recipe.output_dir}")
    result = train_judge(recipe, install=install, log=lambda line: console.print(line, highlight=False, markup=False))
    console.print(f"[green]judge done[/green]: adapter {result.adapter}, card {result.card}")
    for key in ("kappa_in_dist", "kappa_ood_religion", "position_bias_in_dist", "self_consistency_t03"):
        if key in result.holdout_metrics:
            console.print(f"  holdout {key}: {result.holdout_metrics[key]}")
    print(result.adapter)


@option_groups
def reader_command(
    install: Annotated[
        bool, typer.Option("--install", help="Copy the models and their card into the package (the default judge).")
    ] = False,
    *,
    recipe: ReaderRecipeConfig,
) -> None:
    """Rebuild the default judge end to end: the question reader (rows from BBQ, fit, holdout eval) and
    the free-text judge (statement pairs, fit, held-out templates and religion, the holdout without
    choices), then the card.

    Without --config, the default judge's recipe (configs/reading-judge.yaml); the flags override it."""
    from biasjudge.recipes.reader import train_reader

    console.print(f"building the question reader -> {recipe.output_dir}")
    result = train_reader(recipe, install=install, log=lambda line: console.print(line, highlight=False, markup=False))
    console.print(f"[green]reader done[/green]: model {result.model}, card {result.card}")


def register(app: typer.Typer) -> None:
    """Add `train sft` and `train dpo` to the `biasjudge` app."""
    group = typer.Typer(help="Fine-tune a judge: SFT, then DPO (TRL + LoRA).", no_args_is_help=True)
    group.command("sft")(sft_command)
    group.command("dpo")(dpo_command)
    group.command("judge")(judge_command)
    group.command("reader")(reader_command)
    app.add_typer(group, name="train")
