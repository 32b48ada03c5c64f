"""`biasjudge export merge | gguf | ollama | card | push`: ship a trained judge.

Thin: each command calls one function of biasjudge.train.export / biasjudge.train.card and prints
where its output went (the path alone on stdout).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from biasjudge.cli.common import SystemPromptOption, console, defaults_from
from biasjudge.train.card import write_model_card, write_modelfile
from biasjudge.train.export import check_export, export_gguf, merge_adapter


@defaults_from(merge_adapter)
def merge_command(
    adapter: Annotated[Path, typer.Argument(help="Adapter folder (a run's adapter/).", file_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the merged safetensors model.")],
    base: Annotated[
        str | None, typer.Option("--base", help="Base model (default: the one training recorded).", show_default=False)
    ] = None,
    *,
    dtype: Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")],
) -> None:
    """Merge a LoRA adapter into its base model (safetensors + tokenizer, tokenizer.model included)."""
    folder = merge_adapter(base, adapter, out, dtype)
    console.print(f"[green]merged[/green] into {folder}")
    print(folder)


@defaults_from(export_gguf, check_export, check_n="n")
def gguf_command(
    source: Annotated[Path, typer.Argument(help="Merged model folder, or an adapter folder (-> GGUF LoRA).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The .gguf file to write.", dir_okay=False)],
    *,
    quant: Annotated[str, typer.Option("--quant", help="f16, Q8_0 or Q5_K_M (adapters: f16, Q8_0).")],
    llama_cpp_dir: Annotated[
        Path | None,
        typer.Option("--llama-cpp-dir", help="llama.cpp source folder with the converters.", show_default=False),
    ] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="For an adapter: its base model (default: recorded).")
    ] = None,
    check_pairs: Annotated[
        Path | None,
        typer.Option(
            "--check-pairs",
            help="Pairs file (e.g. the holdout): compare verdict probabilities after export.",
        ),
    ] = None,
    check_n: Annotated[int, typer.Option("--check-n", help="How many pairs to check.")],
    system_prompt_file: SystemPromptOption = None,
) -> None:
    """Convert to GGUF with llama.cpp's own converters; optionally check it against transformers."""
    path = export_gguf(source, out, quant, llama_cpp_dir=llama_cpp_dir, base=base)
    console.print(f"[green]wrote[/green] {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if check_pairs is not None:
        from biasjudge.prompts import read_prompt_file

        check, report = check_export(
            source,
            path,
            check_pairs,
            n=check_n,
            system_prompt=read_prompt_file(system_prompt_file) if system_prompt_file else None,
            quant=quant,
            base=base,
        )
        colour = "green" if check.passed else "red"
        console.print(
            f"[{colour}]check {'passed' if check.passed else 'FAILED'}[/{colour}]: max |dp| {check.max_abs_diff:.4f} "
            f"(tolerance {check.tolerance}), token ids equal on {check.token_ids_match}/{check.n_prompts}; {report}"
        )
        if not check.passed:
            raise typer.Exit(1)
    print(path)


@defaults_from(write_modelfile)
def ollama_command(
    gguf: Annotated[Path, typer.Argument(help="The judge GGUF (or the base GGUF with --adapter).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Modelfile to write.")] = Path("Modelfile"),
    adapter: Annotated[Path | None, typer.Option("--adapter", help="A GGUF LoRA adapter (ADAPTER line).")] = None,
    system_prompt_file: SystemPromptOption = None,
    *,
    chat_format: Annotated[str, typer.Option("--chat-format", help="Built-in turn format the judge was trained with.")],
) -> None:
    """Write an Ollama Modelfile: the judge's turn template, system prompt, temperature 0, stop at end of turn."""
    from biasjudge.prompts import load_prompt, read_prompt_file

    system = read_prompt_file(system_prompt_file) if system_prompt_file else load_prompt("judge_system")
    path = write_modelfile(gguf, out, system, chat_format, adapter=adapter)
    console.print(f"[green]wrote[/green] {path}; run: ollama create biasjudge -f {path}")
    print(path)


@defaults_from(write_model_card, name="model_name")
def card_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="README.md to write.")],
    base_model: Annotated[str, typer.Option("--base-model", help="Hub id of the base model.")],
    rows: Annotated[list[Path], typer.Option("--rows", help="Training row files (repeatable) to count label sources.")],
    eval_log: Annotated[Path | None, typer.Option("--eval-log", help="predictions.json or a metrics JSON.")] = None,
    checkpoint: Annotated[str | None, typer.Option("--checkpoint", help="Checkpoint of the eval log.")] = None,
    dataset: Annotated[
        list[str] | None, typer.Option("--dataset", help="Hub dataset id (repeatable).", show_default=False)
    ] = None,
    license: Annotated[str, typer.Option("--license", help="Licence id.")] = "gemma",
    *,
    name: Annotated[str, typer.Option("--name", help="Model name in the card.")],
) -> None:
    """Write a model card (YAML front matter with model-index, results table, label sources)."""
    path = write_model_card(
        out,
        base_model=base_model,
        eval_log_or_report=eval_log,
        datasets=dataset or ["krishnakartik/gemma4-social-bias-judge-pairs"],
        license=license,
        rows_meta=rows,
        model_name=name,
        checkpoint=checkpoint,
    )
    console.print(f"[green]wrote[/green] {path}")
    print(path)


def push_command(
    folder: Annotated[
        Path,
        typer.Argument(
            help="Exported judge folder: a merged model, a PEFT adapter or a GGUF, with README.md or MODEL_CARD.md.",
            file_okay=False,
        ),
    ],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub model repo to push to (owner/name).")],
    private: Annotated[
        bool, typer.Option("--private", help="Create the repo private (an existing repo keeps its own).")
    ] = False,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Hub token with write access (default: $HF_TOKEN, else `hf auth login`'s).",
            show_default=False,
        ),
    ] = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Commit message.", show_default=False)] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the folder and list what would be uploaded; send nothing.")
    ] = False,
) -> None:
    """Push an exported judge (model + model card, the card as README.md) to the Hugging Face Hub in one commit."""
    from biasjudge.train.export import plan_push, push_judge

    plan = plan_push(folder, repo_id, private=private)
    console.print(
        f"{'would push' if dry_run else 'pushing'} {plan.kind} {folder} -> {repo_id}"
        f"{' (private)' if private else ''}: {len(plan.files)} files, {plan.total_bytes / 1e6:.1f} MB"
    )
    if dry_run:
        for line in plan.lines():
            print(line)
        return
    url = push_judge(plan, token=token, commit_message=message)
    console.print(f"[green]pushed[/green] {repo_id}")
    print(url)


def register(app: typer.Typer) -> None:
    """Add `export merge|gguf|ollama|card|push` to the `biasjudge` app."""
    group = typer.Typer(
        help="Ship a trained judge: merge, GGUF, Ollama Modelfile, model card, push to the Hub.", no_args_is_help=True
    )
    group.command("merge")(merge_command)
    group.command("gguf")(gguf_command)
    group.command("ollama")(ollama_command)
    group.command("card")(card_command)
    group.command("push")(push_command)
    app.add_typer(group, name="export")
