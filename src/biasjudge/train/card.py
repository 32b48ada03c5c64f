"""Files that ship with an exported judge: an Ollama Modelfile and a Hugging Face model card.

The Modelfile's TEMPLATE writes the same turns as :mod:`biasjudge.prompts.render` (the system turn,
the user turn, then the opened model turn), stops at the end-of-turn marker, and pins temperature
0 and a 4096-token context. `<|think|>` is refused in the template and in the system prompt.

The card's YAML front matter carries base_model, license, datasets and a model-index with the
eval results read from an eval log (predictions.json: `metrics` per checkpoint); its Markdown
table shows the same numbers, and the card says which label source the training rows had.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from biasjudge.errors import ConfigError, DataError
from biasjudge.io import atomic_open, iter_text_lines, read_json
from biasjudge.prompts.render import DEFAULT_TURN_FORMAT, THINK_TOKEN, refuse_thinking, turn_format
from biasjudge.records import pick_checkpoint

MODEL_INDEX_METRICS = {
    "kappa_in_dist": "Cohen's kappa vs human labels, in-distribution",
    "kappa_ood_religion": "Cohen's kappa vs human labels, OOD religion",
    "position_bias_in_dist": "Position bias, in-distribution",
    "position_bias_ood": "Position bias, OOD religion",
    "self_consistency_t03": "Self-consistency (T=0.3)",
    "parse_failure_rate": "Parse failure rate",
    "verbosity_bias": "Verbosity bias",
}
"""Metrics put into the model-index (those present in the log), with their display names."""


def modelfile_template(chat_format: str = DEFAULT_TURN_FORMAT) -> str:
    """An Ollama Go template writing the built-in turn format `chat_format`."""
    fmt = turn_format(chat_format)
    if fmt.system:
        head = "{{ if .System }}" + fmt.system.format(content="{{ .System }}") + "{{ end }}"
        user = "{{ if .Prompt }}" + fmt.user.format(content="{{ .Prompt }}") + "{{ end }}"
    else:  # no system role: the system text opens the user turn, as render_builtin does
        head = ""
        content = "{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}"
        user = fmt.user.format(content=content)
    return head + user + fmt.generation_prompt + "{{ .Response }}" + fmt.end_of_turn


def write_modelfile(
    gguf: str | Path,
    out: str | Path,
    system_prompt: str,
    chat_format: str = DEFAULT_TURN_FORMAT,
    *,
    adapter: str | Path | None = None,
    num_ctx: int = 4096,
) -> Path:
    """Write an Ollama Modelfile for a judge GGUF (with `adapter`: FROM the base, ADAPTER the LoRA).

    Paths are written relative to the Modelfile's folder when they lie inside it.
    """
    refuse_thinking(system_prompt, "system prompt")
    template = modelfile_template(chat_format)
    refuse_thinking(template, "Modelfile template")
    if '"""' in system_prompt:
        raise ConfigError('the system prompt contains """, which an Ollama Modelfile cannot quote')
    out = Path(out)
    fmt = turn_format(chat_format)

    def where(path: str | Path) -> str:
        path = Path(path).resolve()
        try:
            return "./" + str(path.relative_to(out.parent.resolve()))
        except ValueError:
            return str(path)

    lines = [f"FROM {where(gguf)}"]
    if adapter is not None:
        lines.append(f"ADAPTER {where(adapter)}")
    lines += [
        f'TEMPLATE """{template}"""',
        f'SYSTEM """{system_prompt}"""',
        "PARAMETER temperature 0",
        f"PARAMETER num_ctx {num_ctx}",
        f'PARAMETER stop "{fmt.end_of_turn}"',
    ]
    text = "\n".join(lines) + "\n"
    if THINK_TOKEN in text:  # pragma: no cover - both parts were checked above
        raise ConfigError(f"the Modelfile would contain {THINK_TOKEN}")
    with atomic_open(out) as handle:
        handle.write(text)
    return out


def read_eval_metrics(path: str | Path, checkpoint: str | None = None) -> tuple[str, dict[str, Any]]:
    """(checkpoint name, metrics) from an eval log (predictions.json) or a plain metrics JSON.

    An eval log holds `metrics: {checkpoint: {name: value}}`; without `checkpoint` it must hold
    exactly one. A plain `{name: value}` file is taken as it is (checkpoint "model").
    """
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(str(path), None, None, "expected a JSON object")
    metrics = data.get("metrics", data)
    if metrics and all(isinstance(v, dict) for v in metrics.values()):
        checkpoint = pick_checkpoint(list(metrics), checkpoint, path, "say which one the card is for (--checkpoint)")
        return checkpoint, dict(metrics[checkpoint])
    return checkpoint or "model", {k: v for k, v in metrics.items() if isinstance(v, int | float) or v is None}


def rows_summary(rows_files: Sequence[str | Path]) -> dict[str, dict[str, int]]:
    """Counts of label_source / reasoning_source / source / verdict over training row files."""
    counts: dict[str, Counter[str]] = {k: Counter() for k in ("label_source", "reasoning_source", "source", "verdict")}
    for path in rows_files:
        for _, line, _ in iter_text_lines(path):
            row = json.loads(line)
            for key, counter in counts.items():
                if key in row and row[key] is not None:
                    counter[str(row[key])] += 1
    return {k: dict(v) for k, v in counts.items() if v}


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def write_model_card(
    out: str | Path,
    *,
    base_model: str,
    eval_log_or_report: str | Path | None,
    datasets: Sequence[str],
    license: str,
    rows_meta: Mapping[str, Mapping[str, int]] | Sequence[str | Path],
    model_name: str = "biasjudge",
    checkpoint: str | None = None,
    notes: str = "",
) -> Path:
    """Write README.md (a model card) with YAML front matter and a Markdown results table.

    Args:
        out: the README.md to write.
        base_model: hub id of the base model (front matter `base_model`).
        eval_log_or_report: an eval log (predictions.json) or a metrics JSON; None: no results yet.
        datasets: hub dataset ids the judge was trained on.
        license: the licence id (e.g. apache-2.0, gemma).
        rows_meta: counts per field (see :func:`rows_summary`), or the training row files to count.
        model_name: the name in the model-index.
        checkpoint: which checkpoint of a multi-checkpoint eval log.
        notes: free Markdown appended under "Training".
    """
    counts = {k: dict(v) for k, v in rows_meta.items()} if isinstance(rows_meta, Mapping) else rows_summary(rows_meta)
    results: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    name = checkpoint or model_name
    if eval_log_or_report is not None:
        name, metrics = read_eval_metrics(eval_log_or_report, checkpoint)
        for key, label in MODEL_INDEX_METRICS.items():
            if metrics.get(key) is not None:
                results.append({"type": key, "value": round(float(metrics[key]), 4), "name": label})
    front: dict[str, Any] = {
        "base_model": base_model,
        "license": license,
        "datasets": list(datasets),
        "library_name": "peft",
        "pipeline_tag": "text-generation",
        "tags": ["llm-judge", "social-bias", "bbq", "biasjudge"],
    }
    if results:
        front["model-index"] = [
            {
                "name": model_name,
                "results": [
                    {
                        "task": {"type": "text-classification", "name": "Pairwise social-bias judging"},
                        "dataset": {
                            "name": "BBQ judge holdout (300 human-labelled pairs)",
                            "type": datasets[0] if datasets else "bbq",
                        },
                        "metrics": results,
                    }
                ],
            }
        ]
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {model_name}", ""]
    lines += [
        f"A pairwise social-bias judge fine-tuned from `{base_model}` with biasjudge. It reads a BBQ question "
        "and two responses and answers `<reasoning>...</reasoning><verdict>A|B|TIE</verdict>`: which response "
        "leans MORE on demographic stereotypes, or TIE.",
        "",
        "## Evaluation",
        "",
    ]
    if metrics:
        lines += [
            f"Checkpoint `{name}`, from `{Path(str(eval_log_or_report)).name}`.",
            "",
            "| metric | value | 95% interval |",
            "|---|---|---|",
        ]
        for key in sorted(metrics):
            if key.endswith(("_ci_low", "_ci_high")):
                continue
            low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
            interval = f"[{_fmt(low)}, {_fmt(high)}]" if low is not None and high is not None else ""
            lines.append(f"| {key} | {_fmt(metrics[key])} | {interval} |")
    else:
        lines.append("Not evaluated yet.")
    lines += ["", "## Training data", ""]
    if counts:
        lines += ["| field | counts |", "|---|---|"]
        for key, values in counts.items():
            lines.append(f"| {key} | " + ", ".join(f"{k}: {v}" for k, v in sorted(values.items())) + " |")
        sources = counts.get("label_source", {})
        if sources:
            lines += ["", "Labels came from: " + ", ".join(f"{k} ({v} rows)" for k, v in sorted(sources.items())) + "."]
    else:
        lines.append("No row counts recorded.")
    if notes:
        lines += ["", "## Training", "", notes]
    out = Path(out)
    with atomic_open(out) as handle:
        handle.write("\n".join(lines) + "\n")
    return out
