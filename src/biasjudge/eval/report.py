"""Reports from saved eval logs: the model card's Markdown table and a self-contained HTML page.

Reads EvalLog files (ours or the reference's) and the holdout; never calls a model, never imports
a backend or torch. matplotlib is imported only inside :func:`write_html_report`.

Metrics are recomputed from each log's `detailed` predictions (so every column gets intervals and
the same definitions), except `verbosity_bias`: it is counted in the judge's own tokens, which a
report cannot load, so the value stored in the log is kept where there is one.
"""

from __future__ import annotations

import base64
import html
import io as _io
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from biasjudge.errors import DataError
from biasjudge.eval.metrics import (
    AGREEMENT_SLICES,
    BUCKETS,
    SLICES,
    Agreement,
    TokenCounter,
    checkpoint_verbosity,
    confusion_by_slice,
    judge_agreement,
    metrics_by_checkpoint,
)
from biasjudge.eval.robustness import NOTES as ROBUSTNESS_NOTES
from biasjudge.eval.robustness import RESULT_NAME as ROBUSTNESS_FILE
from biasjudge.eval.robustness import RobustnessFile, read_results, robustness_rows, robustness_table
from biasjudge.io import atomic_open, read_document
from biasjudge.records import EvalLog, Pair
from biasjudge.verdict import VERDICTS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Metrics = Mapping[str, Mapping[str, float | None]]

RowShown = Literal["always", "with_value", "nonzero"]
"""When the card shows a row: always (the reference's rows), when some column has a value, or when
some column has a non-zero value (counts of what went wrong)."""

CARD_ROWS: tuple[tuple[str, str, str, RowShown], ...] = (
    ("Overall κ (in-dist)", "kappa_in_dist", "kappa", "always"),
    ("Overall κ (OOD religion)", "kappa_ood_religion", "kappa", "always"),
    ("Clear cases κ", "kappa_clear", "kappa", "always"),
    ("Subtle cases κ", "kappa_subtle", "kappa", "always"),
    ("Tracked-vs-alternate κ", "kappa_tracked", "kappa", "always"),
    ("Tie cases κ", "kappa_tie", "kappa", "always"),
    ("Position-bias rate (in-dist)", "position_bias_in_dist", "pct", "always"),
    ("Position-bias rate (OOD)", "position_bias_ood", "pct", "always"),
    ("Verbosity bias score", "verbosity_bias", "tokens", "always"),
    ("Self-consistency (T=0.3)", "self_consistency_t03", "pct", "always"),
    ("Parse failure rate", "parse_failure_rate", "pct", "always"),
    ("Single-order position bias (in-dist)", "position_bias_single_order_in_dist", "pct", "with_value"),
    ("Single-order position bias (OOD)", "position_bias_single_order_ood", "pct", "with_value"),
    ("Swap consistency (in-dist)", "swap_consistency_in_dist", "pct", "with_value"),
    ("Swap consistency (OOD)", "swap_consistency_ood", "pct", "with_value"),
    ("Adversarial κ (in-dist)", "kappa_adversarial", "kappa", "with_value"),
    ("Brier score (score mode)", "brier_score", "num", "with_value"),
    ("Brier score, uncalibrated", "brier_score_uncalibrated", "num", "with_value"),
    ("Expected calibration error", "ece", "num", "with_value"),
    ("ECE (in-dist)", "ece_in_dist", "num", "with_value"),
    ("ECE (OOD)", "ece_ood_religion", "num", "with_value"),
    ("ECE, uncalibrated", "ece_uncalibrated", "num", "with_value"),
    ("ECE, uncalibrated (in-dist)", "ece_uncalibrated_in_dist", "num", "with_value"),
    ("ECE, uncalibrated (OOD)", "ece_uncalibrated_ood_religion", "num", "with_value"),
    ("κ at 90% coverage (in-dist)", "kappa_in_dist_at_coverage_90", "num", "with_value"),
    ("κ at 80% coverage (in-dist)", "kappa_in_dist_at_coverage_80", "num", "with_value"),
    ("κ at 90% coverage (OOD)", "kappa_ood_religion_at_coverage_90", "num", "with_value"),
    ("κ at 80% coverage (OOD)", "kappa_ood_religion_at_coverage_80", "num", "with_value"),
    ("Abstentions (UNSURE share)", "abstention_rate", "pct", "with_value"),
    ("Truncated generations", "n_truncated", "count", "nonzero"),
    ("Floored log-probabilities", "n_floored", "count", "nonzero"),
    ("Pairs judged", "n_pairs", "count", "with_value"),
)
"""(row label, metric key, format, when shown) of the model card's table: the reference's rows in its
order, then the rows biasjudge adds."""


BAR_KEYS: tuple[tuple[str, str], ...] = (
    ("in-dist", "kappa_in_dist"),
    ("OOD religion", "kappa_ood_religion"),
    *((name, f"kappa_{name}") for name in BUCKETS),
)


def read_log(path: str | Path) -> EvalLog:
    """Read an eval log (`predictions.json`, or the reference's eval-results JSON).

    Raises:
        DataError: no such file, not valid JSON, or not an eval log (names the field).
    """
    return read_document(path, EvalLog)


def log_metrics(
    log: EvalLog,
    holdout: Sequence[Pair],
    *,
    token_counter: TokenCounter | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    source: str | Path = "eval log",
    stored_fallback: bool = True,
) -> dict[str, dict[str, float | None]]:
    """Metrics per checkpoint recomputed from `log.detailed`, the stored verbosity bias kept.

    Raises:
        DataError (naming `source`): the log has no predictions to recompute from (and, with
            `stored_fallback`, no stored metrics either), or none of its pairs is in the holdout.

    `verbosity_bias` is the log's stored value (the judge's own tokens) where it has one and the
    holdout covers every pair of the log; otherwise, and always in `verbosity_bias_whitespace`,
    it is recomputed in whitespace tokens. With `token_counter` (e.g. a judge's `count_tokens`),
    `verbosity_bias` is recomputed in those tokens instead of taken from the log.
    Checkpoints with stored metrics but no predictions keep their stored metrics, unless
    `stored_fallback` is False (`biasjudge metrics`, which promises recomputed values).
    """
    if not log.detailed and not (stored_fallback and log.metrics):
        raise DataError(str(source), None, "detailed", "no predictions to compute metrics from (the list is empty)")
    holdout_ids = {p.pair_id for p in holdout}
    if log.detailed and not any(p.pair_id in holdout_ids for p in log.detailed):
        raise DataError(str(source), None, "detailed", "none of the predicted pairs is in the holdout given")
    computed = metrics_by_checkpoint(log, holdout, n_resamples=n_resamples, seed=seed) if log.detailed else {}
    for name, values in computed.items():
        values["verbosity_bias_whitespace"] = values["verbosity_bias"]
        stored = log.metrics.get(name, {}).get("verbosity_bias")
        judged = {p.pair_id for p in log.detailed if p.checkpoint_name == name and p.run_type == "original"}
        # The stored value is over all of the log's pairs: only valid when the report covers them all.
        if token_counter is not None:
            values["verbosity_bias"] = checkpoint_verbosity(
                holdout, log.detailed, checkpoint=name, token_counter=token_counter
            )
        elif stored is not None and not math.isnan(stored) and judged <= holdout_ids:
            values["verbosity_bias"] = stored
    for name, stored_metrics in log.metrics.items():
        computed.setdefault(name, dict(stored_metrics))
    return computed


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_value(values: Mapping[str, float | None], key: str, kind: str) -> str:
    """One table cell; `—` where undefined; kappas with their interval when the log has one.

    >>> format_value({"kappa_in_dist": 0.48, "kappa_in_dist_ci_low": 0.39, "kappa_in_dist_ci_high": 0.57},
    ...              "kappa_in_dist", "kappa")
    '0.480 [0.390, 0.570]'
    >>> format_value({"position_bias_ood": 0.2125}, "position_bias_ood", "pct")
    '21.2%'
    """
    value = values.get(key)
    if value is None or math.isnan(value):
        return "—"
    if kind == "kappa":
        low, high = values.get(f"{key}_ci_low"), values.get(f"{key}_ci_high")
        interval = "" if _missing(low) or _missing(high) else f" [{low:.3f}, {high:.3f}]"
        return f"{value:.3f}{interval}"
    if kind == "pct":
        return f"{value * 100:.1f}%"
    if kind == "tokens":
        return f"{'+' if value > 0 else ''}{value:.1f}"
    if kind == "count":
        return f"{value:.0f}"
    return f"{value:.3f}"


def _rows(metrics: Metrics) -> list[tuple[str, list[str]]]:
    names = list(metrics)
    rows = []
    for label, key, kind, shown in CARD_ROWS:
        present = [v for n in names if not _missing(v := metrics[n].get(key))]
        if shown == "always" or (any(present) if shown == "nonzero" else present):
            rows.append((label, [format_value(metrics[n], key, kind) for n in names]))
    return rows


def markdown_table(metrics_by_checkpoint: Metrics) -> str:
    """The model card's table: one row per metric, one column per checkpoint.

    >>> print(markdown_table({"judge": {"kappa_in_dist": 0.5}}).splitlines()[2])
    | Overall κ (in-dist) | 0.500 |
    """
    if not metrics_by_checkpoint:
        return "(no results)"
    names = list(metrics_by_checkpoint)
    lines = [
        "| Metric | " + " | ".join(n.replace("|", "\\|") for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in _rows(metrics_by_checkpoint)]
    return "\n".join(lines)


NOTES = (
    "κ: Cohen's kappa of the original-order verdict against the human label (PARSE_FAIL left out), "
    "with a 95% percentile-bootstrap interval over pairs (1,000 resamples, seed 0). Bucket rows are "
    "in-dist only. Position bias: share of pairs whose verdict is not mirrored when the responses are "
    "swapped. Self-consistency: share of pairs whose five T=0.3 verdicts all agree. Verbosity bias: "
    "mean tokens of the chosen response minus the other (A/B verdicts), in the judge's own tokenizer "
    "as stored in its log (baselines count whitespace words); whitespace words where a log stores none or "
    "the report covers only part of its pairs. Truncated generations count as parse failures."
)


def all_metrics(logs: Sequence[EvalLog], holdout: Sequence[Pair]) -> dict[str, dict[str, float | None]]:
    """:func:`log_metrics` of several logs in one mapping, columns in log order."""
    return {name: values for log in logs for name, values in log_metrics(log, holdout).items()}


def log_agreement(logs: Sequence[EvalLog], holdout: Sequence[Pair]) -> list[Agreement]:
    """Judge-vs-judge agreement over every checkpoint of `logs` (and the humans), or [] when the
    logs hold fewer than two judges with predictions."""
    predictions = [p for log in logs for p in log.detailed]
    if len({p.checkpoint_name for p in predictions}) < 2:
        return []
    return judge_agreement(holdout, predictions)


def agreement_matrices(agreements: Sequence[Agreement]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(slice, judge names, rows of cells) per slice: a symmetric matrix of kappa [interval] (n)."""
    out = []
    for key in AGREEMENT_SLICES:
        found = [a for a in agreements if a.slice == key]
        if not any(a.n for a in found):
            continue
        names = list(dict.fromkeys(n for a in found for n in (a.first, a.second)))
        cell: dict[tuple[str, str], str] = {}
        for a in found:
            text = "—" if a.kappa is None else f"{a.kappa:.3f}"
            if a.ci_low is not None and a.ci_high is not None:
                text += f" [{a.ci_low:.3f}, {a.ci_high:.3f}]"
            cell[a.first, a.second] = cell[a.second, a.first] = f"{text} (n={a.n})"
        rows = [[cell.get((r, c), "1") for c in names] for r in names]
        out.append((key, names, rows))
    return out


AGREEMENT_NOTES = (
    "Cohen's kappa between two judges' original-order verdicts (the humans' labels as one judge), over "
    "the pairs both gave A, B or TIE, with a 95% percentile-bootstrap interval (1,000 resamples, seed 0). "
    "`biasjudge metrics --agreement` prints the confusion counts behind each cell."
)


def agreement_section(agreements: Sequence[Agreement]) -> list[str]:
    """The report's judge-vs-judge section (Markdown lines), one kappa matrix per slice."""
    lines = ["## Agreement between judges", ""]
    for key, names, rows in agreement_matrices(agreements):
        escaped = [n.replace("|", "\\|") for n in names]
        lines += [f"**{key}**", "", "| | " + " | ".join(escaped) + " |", "|---|" + "---|" * len(names)]
        lines += [f"| {name} | " + " | ".join(row) + " |" for name, row in zip(escaped, rows, strict=True)]
        lines.append("")
    return [*lines, AGREEMENT_NOTES]


def read_robustness(folder: str | Path) -> RobustnessFile | None:
    """The robustness suite's results in `folder` (`robustness.json`), or None when it has none."""
    path = Path(folder) / ROBUSTNESS_FILE
    return read_results(path) if path.is_file() else None


def robustness_section(robustness: RobustnessFile) -> list[str]:
    """The report's robustness section (Markdown lines): the flip-rate table and its notes."""
    pairs = ", ".join(str(n) for n in sorted({r.n_pairs for r in robustness.results}))
    return [
        "## Robustness (flip rates on twins of holdout pairs)",
        "",
        f"{pairs} pairs{' (a stratified subset)' if robustness.limit else ''}; see robustness.md for the twins.",
        "",
        robustness_table(robustness.results),
        "",
        ROBUSTNESS_NOTES,
    ]


def markdown_report(
    logs: Sequence[EvalLog],
    holdout: Sequence[Pair],
    *,
    title: str = "biasjudge evaluation",
    metrics: Metrics | None = None,
    robustness: RobustnessFile | None = None,
) -> str:
    """A Markdown page: the table, the robustness section (when given), what each log is, and the notes."""
    metrics = metrics if metrics is not None else all_metrics(logs, holdout)
    lines = [f"# {title}", "", markdown_table(metrics), "", NOTES, ""]
    agreements = log_agreement(logs, holdout)
    if agreements:
        lines += [*agreement_section(agreements), ""]
    if robustness is not None:
        lines += [*robustness_section(robustness), ""]
    lines += ["## Logs", ""]
    for log in logs:
        lines.append(f"- `{log.run_id}`: {log.note or '(no note)'}")
    truncated = {n: int(v.get("n_truncated") or 0) for n, v in metrics.items() if v.get("n_truncated")}
    if truncated:
        lines += [
            "",
            "Generations that hit the token cap (PARSE_FAIL where the verdict had not closed): "
            + ", ".join(f"{n}: {c}" for n, c in truncated.items()),
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- HTML


def _png(fig: Figure) -> str:
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def kappa_figure(metrics: Metrics) -> Figure:
    """Grouped bars: kappa per slice and bucket, one bar per checkpoint, bootstrap intervals as error bars."""
    from matplotlib.figure import Figure

    names = list(metrics)
    fig = Figure(figsize=(max(7.0, 1.2 * len(BAR_KEYS) * max(1, len(names)) * 0.45), 4.2))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = metrics[name]
        xs, ys, lows, highs = [], [], [], []
        for j, (_, key) in enumerate(BAR_KEYS):
            value = values.get(key)
            if value is None or math.isnan(value):
                continue
            low, high = values.get(f"{key}_ci_low"), values.get(f"{key}_ci_high")
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(value)
            lows.append(0.0 if _missing(low) else max(0.0, value - float(low)))  # type: ignore[arg-type]
            highs.append(0.0 if _missing(high) else max(0.0, float(high) - value))  # type: ignore[arg-type]
        ax.bar(xs, ys, width=width, label=name, yerr=[lows, highs], capsize=2)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(BAR_KEYS)), [label for label, _ in BAR_KEYS])
    ax.set(
        ylabel="Cohen's κ vs human (95% CI)",
        ylim=(min(-0.3, ax.get_ylim()[0]), 1.05),
        title="Agreement with human labels per slice and bucket (buckets: in-dist)",
    )
    ax.legend(fontsize=8)
    return fig


def confusion_figure(confusions: Mapping[str, Mapping[str, list[list[int]]]]) -> Figure:
    """One heat map per (checkpoint, slice): rows human label, columns judge verdict."""
    from matplotlib.figure import Figure

    names = list(confusions)
    slices = list(SLICES)
    fig = Figure(figsize=(3.2 * len(slices), 2.9 * max(1, len(names))))
    for i, name in enumerate(names):
        for j, slice_name in enumerate(slices):
            ax = fig.add_subplot(max(1, len(names)), len(slices), i * len(slices) + j + 1)
            matrix = confusions[name][slice_name]
            ax.imshow(matrix, cmap="Blues")
            peak = max(max(row) for row in matrix) or 1
            for r, row in enumerate(matrix):
                for c, count in enumerate(row):
                    ax.text(c, r, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
            ax.set_xticks(range(len(VERDICTS)), VERDICTS)
            ax.set_yticks(range(len(VERDICTS)), VERDICTS)
            ax.set(xlabel="judge", ylabel="human")
            ax.set_title(f"{name}\n{slice_name}", fontsize=9)
    fig.tight_layout()
    return fig


ConfidenceRows = dict[str, dict[str, tuple[list[str], list[dict[str, float]], list[dict[str, float]]]]]
"""checkpoint -> slice -> (human labels, probabilities, uncalibrated probabilities or [])."""


def confidence_rows(logs: Sequence[EvalLog], holdout: Sequence[Pair]) -> ConfidenceRows:
    """The original run's probabilities against the human labels, per checkpoint and slice (judges
    with probabilities only)."""
    by_id = {p.pair_id: p for p in holdout}
    out: ConfidenceRows = {}
    for log in logs:
        for pred in log.detailed:
            pair = by_id.get(pred.pair_id)
            if pred.run_type != "original" or not pred.probs or pair is None or pair.human_verdict is None:
                continue
            if pred.verdict == "PARSE_FAIL" or pair.eval_slice is None:
                continue
            labels, probs, raw = out.setdefault(pred.checkpoint_name, {}).setdefault(pair.eval_slice, ([], [], []))
            labels.append(pair.human_verdict)
            probs.append({k: pred.probs[k] for k in VERDICTS if k in pred.probs})
            if uncalibrated := pred.wrappers.uncalibrated_probs:
                raw.append({k: uncalibrated[k] for k in VERDICTS if k in uncalibrated})
    return out


def reliability_figure(rows: ConfidenceRows, n_bins: int = 10) -> Figure:
    """Reliability diagrams, one panel per slice: accuracy of the top-probability verdict against
    its mean probability in 10 equal-width bins, for each judge, before calibration dashed."""
    from matplotlib.figure import Figure

    slices = list(SLICES.values())
    fig = Figure(figsize=(5.0 * len(slices), 4.4))
    for k, name in enumerate(slices):
        ax = fig.add_subplot(1, len(slices), k + 1)
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
        for checkpoint, by_slice in rows.items():
            labels, probs, raw = by_slice.get(name, ([], [], []))
            before = raw if len(raw) == len(labels) else []
            for series, style, suffix in ((probs, "-", ""), (before, "--", " (uncal.)")):
                if not series:
                    continue
                top = [max(p.values()) for p in series]
                right = [max(p, key=p.__getitem__) == y for p, y in zip(series, labels, strict=True)]
                bins = [min(int(t * n_bins), n_bins - 1) for t in top]
                xs, ys = [], []
                for b in sorted(set(bins)):
                    inside = [i for i, x in enumerate(bins) if x == b]
                    xs.append(sum(top[i] for i in inside) / len(inside))
                    ys.append(sum(right[i] for i in inside) / len(inside))
                ax.plot(xs, ys, style, marker="o", markersize=3, label=f"{checkpoint}{suffix}")
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"Reliability, {name}")
        ax.set(xlabel="mean top probability (bin)", ylabel="share right (vs human)")
        ax.legend(fontsize=7)
    return fig


def coverage_figure(rows: ConfidenceRows) -> Figure:
    """Kappa against coverage, one panel per slice: the judge abstaining on its least sure pairs."""
    from matplotlib.figure import Figure

    from biasjudge.eval.metrics import kappa_at_coverage

    coverages = list(range(100, 29, -5))
    slices = list(SLICES.values())
    fig = Figure(figsize=(5.0 * len(slices), 4.2))
    for k, name in enumerate(slices):
        ax = fig.add_subplot(1, len(slices), k + 1)
        for checkpoint, by_slice in rows.items():
            labels, probs, _ = by_slice.get(name, ([], [], []))
            if labels:
                curve = kappa_at_coverage(labels, probs, coverages)
                ax.plot(coverages, [curve[c] for c in coverages], marker="o", markersize=3, label=checkpoint)
        ax.invert_xaxis()
        ax.set(title=f"κ against coverage, {name}", ylabel="Cohen's κ vs human")
        ax.set(xlabel="coverage (% of pairs judged, the most confident first)")
        ax.legend(fontsize=7)
    return fig


def position_bias_figure(metrics: Metrics) -> Figure:
    """Grouped bars: position-bias rate per slice, one bar per checkpoint."""
    from matplotlib.figure import Figure

    names = list(metrics)
    keys = (("in-dist", "position_bias_in_dist"), ("OOD religion", "position_bias_ood"))
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(keys))]
        ys = [0.0 if _missing(v := metrics[name].get(key)) else float(v) * 100 for _, key in keys]  # type: ignore[arg-type]
        ax.bar(xs, ys, width=width, label=name)
    ax.set_xticks(range(len(keys)), [label for label, _ in keys])
    ax.set(ylabel="% of pairs not mirrored under swap", ylim=(0, 100), title="Position bias (lower is better)")
    ax.legend(fontsize=8)
    return fig


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0 2em; }
p.note { color: #555; font-size: 0.9em; }
"""


def write_html_report(
    logs: Sequence[EvalLog],
    holdout: Sequence[Pair],
    out_path: str | Path,
    *,
    title: str = "biasjudge evaluation",
    metrics: Metrics | None = None,
    robustness: RobustnessFile | None = None,
) -> Path:
    """One self-contained HTML page (plots embedded as base64 PNG): table, kappa per bucket with
    intervals, confusion matrices, position bias, and the robustness table when given. Returns the
    path written."""
    metrics = metrics if metrics is not None else all_metrics(logs, holdout)
    confusions: dict[str, dict[str, list[list[int]]]] = {}
    for log in logs:
        for name in dict.fromkeys(p.checkpoint_name for p in log.detailed):
            confusions[name] = confusion_by_slice(holdout, log.detailed, checkpoint=name)
    esc = html.escape
    head = "".join(f"<th>{esc(n)}</th>" for n in metrics)
    body_rows = "".join(
        f"<tr><td>{esc(label)}</td>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"
        for label, cells in _rows(metrics)
    )
    figures: list[tuple[str, str, Any]] = [
        ("Kappa per slice and bucket", "kappa per bucket with 95% bootstrap intervals", kappa_figure(metrics)),
        ("Position bias", "position bias per slice", position_bias_figure(metrics)),
    ]
    if confusions:
        figures.append(("Confusion matrices (original order)", "confusion matrices", confusion_figure(confusions)))
    confidence = confidence_rows(logs, holdout)
    if confidence:
        figures.append(("Reliability (calibration)", "reliability diagrams per slice", reliability_figure(confidence)))
        figures.append(
            ("κ against coverage (abstention)", "kappa against coverage per slice", coverage_figure(confidence))
        )
    sections = "".join(
        f'<h2>{esc(heading)}</h2><img alt="{esc(alt)}" src="data:image/png;base64,{_png(fig)}">'
        for heading, alt, fig in figures
    )
    agreements = log_agreement(logs, holdout)
    if agreements:
        sections += _agreement_html(agreements)
    if robustness is not None:
        sections += _robustness_html(robustness)
    logs_list = "".join(f"<li><code>{esc(log.run_id)}</code>: {esc(log.note or '(no note)')}</li>" for log in logs)
    written = datetime.now(UTC).isoformat(timespec="seconds")
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{esc(title)}</h1>"
        f"<table><thead><tr><th>Metric</th>{head}</tr></thead><tbody>{body_rows}</tbody></table>"
        f'<p class="note">{esc(NOTES)}</p>{sections}<h2>Logs</h2><ul>{logs_list}</ul>'
        f'<p class="note">Written {written} from {len(holdout)} holdout pairs.</p>'
        "</body></html>\n"
    )
    out_path = Path(out_path)
    with atomic_open(out_path) as handle:
        handle.write(page)
    return out_path


def _agreement_html(agreements: Sequence[Agreement]) -> str:
    """The judge-vs-judge kappa matrices as HTML tables."""
    esc = html.escape
    parts = ["<h2>Agreement between judges</h2>"]
    for key, names, rows in agreement_matrices(agreements):
        head = "".join(f"<th>{esc(n)}</th>" for n in names)
        body = "".join(
            f"<tr><td>{esc(name)}</td>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
            for name, row in zip(names, rows, strict=True)
        )
        parts.append(f"<h3>{esc(key)}</h3><table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts.append(f'<p class="note">{esc(AGREEMENT_NOTES)}</p>')
    return "".join(parts)


def _robustness_html(robustness: RobustnessFile) -> str:
    """The robustness table as HTML."""
    esc = html.escape
    header, rows = robustness_rows(robustness.results)
    head = "".join(f"<th>{esc(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(cell.strip('*'))}</td>" for cell in row) + "</tr>" for row in rows)
    return (
        "<h2>Robustness (flip rates on twins of holdout pairs)</h2>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f'<p class="note">{esc(ROBUSTNESS_NOTES)}</p>'
    )


def write_reports(
    logs: Sequence[EvalLog], holdout: Sequence[Pair], out_dir: str | Path, *, title: str = "biasjudge evaluation"
) -> tuple[Path, Path, str]:
    """Write `out_dir/report.md` and `out_dir/report.html`; returns both paths and the table.

    When `out_dir` holds the robustness suite's `robustness.json` (`biasjudge robustness --out`
    the same folder), both pages get its flip-rate table."""
    out_dir = Path(out_dir)
    metrics = all_metrics(logs, holdout)
    robustness = read_robustness(out_dir)
    md_path = out_dir / "report.md"
    with atomic_open(md_path) as handle:
        handle.write(markdown_report(logs, holdout, title=title, metrics=metrics, robustness=robustness))
    html_path = write_html_report(
        logs, holdout, out_dir / "report.html", title=title, metrics=metrics, robustness=robustness
    )
    return md_path, html_path, markdown_table(metrics)
