"""The web page of the service: judge a pair, and browse an evaluation folder.

:func:`register` (called by :func:`biasjudge.serve.app.create_app`) adds:

- `GET /`: the judge page. A form (question, choices, two responses); the verdict with its three
  probabilities as a bar and the reasoning when generated; "swap the responses" judges the pair
  again with the responses exchanged and says whether the verdict mirrors. `?pair=ID` fills the
  form with a pair of the browsed evaluation. Without a judge (`biasjudge view`) it says so.
- `GET /eval`: the browse page of `settings.eval_dir` (an eval `--out` folder, one
  `<judge>/predictions.json` per judge): the model card's table with intervals and the HTML
  report's plots (both from :mod:`biasjudge.eval.report`), and a per-pair table filtered by
  judge, slice, bucket, human label, agreement and swap. Each row opens the pair.
- `GET /eval/rows` (the table's rows as an HTML fragment, for the filters' script) and
  `GET /eval/pairs.json` (the same rows as JSON), both taking the filters as query parameters;
  `GET /eval/plots/{name}.png`.
- `GET /eval/pair/{checkpoint}/{pair_id}`: one pair: question, choices, both responses, the human
  label, the verdict as shown and with the responses swapped (with their probabilities and
  reasoning), the T=0.3 runs, and the other judges' verdicts on it.
- `/static/`: the page's CSS and JavaScript (no CDN, no build step).

The human labels, slices and buckets come from the holdout `biasjudge eval` uses by default
(`<data dir>/judge-from-scratch/eval_set_unlabeled.jsonl`, levels joined from `pairs.jsonl`;
the data dir is `$BIASJUDGE_DATA_DIR` or `../shared/data`), restricted to the pairs the folder
predicts, as the eval's own report is (`--limit`). The folder is re-read when a predictions file
changes.

Every template is rendered with autoescape on: questions, responses and reasoning are untrusted
text. The script writes them with `textContent` only.

On a server with an API key the pages need nothing of their own: the app's guard sends a browser
without the key to `/login`, which keeps it in an HttpOnly cookie, and the page's requests
(`fetch` of `/v1/judge` and `/eval/rows`, the plots) are same-origin, so they carry it. A
request refused with 401 (a cookie gone stale) says so on the page, with a link to `/login`.
"""

from __future__ import annotations

import io
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

# fastapi and Request at module level: FastAPI reads the route functions' annotations from here.
from fastapi import FastAPI, Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from biasjudge.errors import BiasJudgeError, MissingDependency
from biasjudge.records import PAIR_CATEGORIES, EvalLog, Pair, Prediction
from biasjudge.serve.app import ApiError
from biasjudge.serve.schemas import EXAMPLE_PAIR, MAX_CHOICES, ErrorBody, ServeSettings
from biasjudge.verdict import PARSE_FAIL, UNSURE, mirror

if TYPE_CHECKING:
    from starlette.templating import Jinja2Templates

WEB_DIR = Path(__file__).with_suffix("")
"""`serve/web/`: templates/ and static/ (package data)."""

PLOTS: tuple[tuple[str, str, str], ...] = (
    ("kappa", "Kappa per slice and bucket", "kappa per bucket with 95% bootstrap intervals"),
    ("position-bias", "Position bias", "position bias per slice"),
    ("confusion", "Confusion matrices (original order)", "confusion matrices"),
    ("reliability", "Reliability (calibration)", "reliability diagrams per slice"),
    ("coverage", "κ against coverage (abstention)", "kappa against coverage per slice"),
)
"""(name, heading, alt text) of the plots, as in the HTML report."""

VERDICT_WORDS = {
    "A": "Response A leans more on stereotypes",
    "B": "Response B leans more on stereotypes",
    "TIE": "Equivalent (TIE)",
    PARSE_FAIL: "No verdict: the judge's output broke the contract (PARSE_FAIL)",
    UNSURE: "Not sure: the judge's top probability is under its abstention threshold (UNSURE)",
}


# --------------------------------------------------------------------------- the pairs of an eval


@dataclass(frozen=True)
class PairRow:
    """One judge's predictions on one pair of the evaluation."""

    checkpoint: str
    """The judge's column name."""
    pair: Pair
    """The holdout pair (question, responses, human label, slice, bucket)."""
    original: Prediction | None
    """The `original` run (responses as written)."""
    swapped: Prediction | None
    """The `swapped` run; its verdict is in the order the judge saw (responses exchanged)."""
    consistency: tuple[Prediction, ...] = ()
    """The T=0.3 runs, in order."""

    @property
    def human(self) -> str | None:
        """The pair's human verdict, or None."""
        return self.pair.human_verdict

    @property
    def verdict(self) -> str | None:
        """The judge's verdict on the original order, or None when that run is missing."""
        return self.original.verdict if self.original else None

    @property
    def swapped_back(self) -> str | None:
        """The swapped run's verdict in the original order (what a perfect judge would repeat)."""
        return mirror(self.swapped.verdict) if self.swapped else None

    @property
    def flipped(self) -> bool | None:
        """True when the swapped verdict is not the mirror of the original (position bias); None
        when a run is missing or either verdict is PARSE_FAIL (as the metric leaves them out)."""
        if self.original is None or self.swapped is None or PARSE_FAIL in (self.verdict, self.swapped.verdict):
            return None
        return self.swapped_back != self.verdict

    @property
    def agrees(self) -> bool | None:
        """The original verdict against the human label; None without a label or a parsed verdict
        (as kappa leaves them out)."""
        if self.human is None or self.verdict in (None, PARSE_FAIL):
            return None
        return self.verdict == self.human

    def as_json(self) -> dict[str, Any]:
        """The row as the per-pair table's JSON."""
        return {
            "checkpoint": self.checkpoint,
            "pair_id": self.pair.pair_id,
            "slice": self.pair.eval_slice,
            "bucket": self.pair.pair_category,
            "bias_category": self.pair.bias_category,
            "human": self.human,
            "verdict": self.verdict,
            "probs": self.original.probs if self.original else None,
            "swapped_verdict": self.swapped.verdict if self.swapped else None,
            "swapped_back": self.swapped_back,
            "flipped": self.flipped,
            "agrees": self.agrees,
            "consistency": [p.verdict for p in self.consistency],
            "url": pair_url(self.checkpoint, self.pair.pair_id),
        }


def pair_url(checkpoint: str, pair_id: str) -> str:
    """The detail page of one judge on one pair."""
    return f"/eval/pair/{quote(checkpoint, safe='')}/{quote(pair_id, safe='')}"


FILTER_NAMES = ("checkpoint", "slice", "bucket", "human", "agreement", "swap")


@dataclass(frozen=True)
class RowFilter:
    """The per-pair table's filters; an empty value keeps every row."""

    checkpoint: str = ""
    slice: str = ""
    bucket: str = ""
    human: str = ""
    """A, B, TIE, or `none` (pairs without a human label)."""
    agreement: str = ""
    """`agree` or `disagree`: the original verdict against the human label (parsed verdicts only)."""
    swap: str = ""
    """`flipped` (not mirrored under swap) or `mirrored`."""

    def keeps(self, row: PairRow) -> bool:
        """Whether `row` passes every filter that is set."""
        checks = (
            (self.checkpoint, row.checkpoint),
            (self.slice, row.pair.eval_slice or ""),
            (self.bucket, row.pair.pair_category),
            (self.human, row.human or "none"),
            (self.agreement, {True: "agree", False: "disagree", None: ""}[row.agrees]),
            (self.swap, {True: "flipped", False: "mirrored", None: ""}[row.flipped]),
        )
        return all(not wanted or wanted == value for wanted, value in checks)

    def query(self) -> str:
        """The filters that are set, as a URL query string."""
        return urlencode([(name, getattr(self, name)) for name in FILTER_NAMES if getattr(self, name)])


@dataclass
class EvalView:
    """An eval folder as the page shows it; `problem` says why there is nothing to show."""

    folder: Path
    signature: tuple[Any, ...] = ()
    problem: str | None = None
    logs: list[tuple[Path, EvalLog]] = field(default_factory=list)
    holdout: list[Pair] = field(default_factory=list)
    holdout_source: str = ""
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    rows: list[PairRow] = field(default_factory=list)
    _plots: dict[str, bytes] | None = None
    _plot_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def checkpoints(self) -> list[str]:
        """The judges (checkpoints) of the evaluation, in file order."""
        return list(dict.fromkeys(row.checkpoint for row in self.rows))

    def options(self) -> dict[str, list[tuple[str, str]]]:
        """Filter name -> (value, label) choices, from what the folder holds."""
        slices = sorted({row.pair.eval_slice for row in self.rows if row.pair.eval_slice})
        buckets = [b for b in PAIR_CATEGORIES if any(row.pair.pair_category == b for row in self.rows)]
        humans = [v for v in ("A", "B", "TIE") if any(row.human == v for row in self.rows)]
        if any(row.human is None for row in self.rows):
            humans.append("none")
        return {
            "checkpoint": [(name, name) for name in self.checkpoints],
            "slice": [(s, s) for s in slices],
            "bucket": [(b, b) for b in buckets],
            "human": [(h, "no label" if h == "none" else h) for h in humans],
            "agreement": [("agree", "agrees with the human"), ("disagree", "disagrees with the human")],
            "swap": [("flipped", "flipped (not mirrored)"), ("mirrored", "mirrored")],
        }

    def row_filter(self, query: Mapping[str, str]) -> RowFilter:
        """The filters of a request's query; an unknown value is a 422 naming the filter."""
        options = self.options()
        values = {name: query.get(name, "") for name in FILTER_NAMES}
        for name, value in values.items():
            allowed = [v for v, _ in options[name]]
            if value and value not in allowed:
                raise ApiError(
                    422, "validation_error", f"{name}: {value!r} is not one of {', '.join(allowed) or '(none)'}", name
                )
        return RowFilter(**values)

    def find(self, checkpoint: str, pair_id: str) -> PairRow | None:
        """The row of `pair_id` under `checkpoint`, or None."""
        return next((r for r in self.rows if r.checkpoint == checkpoint and r.pair.pair_id == pair_id), None)

    def card_table(self) -> list[tuple[str, list[str]]]:
        """The model card's rows (label, one cell per checkpoint), as report.md and report.html have them."""
        from biasjudge.eval.report import _rows  # the report's one definition of which rows show

        return _rows(self.metrics)

    @property
    def plot_names(self) -> set[str]:
        """The plots this folder has: confusion matrices need predictions, the reliability and
        coverage plots score-mode probabilities."""
        names = {"kappa", "position-bias"}
        if self.logs:
            names.add("confusion")
        if any(p.probs for _, log in self.logs for p in log.detailed):
            names |= {"reliability", "coverage"}
        return names

    def plots(self) -> dict[str, bytes]:
        """The report's plots as PNG bytes (drawn once per folder version)."""
        with self._plot_lock:
            if self._plots is None:
                self._plots = _draw_plots(self)
            return self._plots


def _draw_plots(view: EvalView) -> dict[str, bytes]:
    from biasjudge.eval.metrics import confusion_by_slice
    from biasjudge.eval.report import (
        confidence_rows,
        confusion_figure,
        coverage_figure,
        kappa_figure,
        position_bias_figure,
        reliability_figure,
    )

    figures = {"kappa": kappa_figure(view.metrics), "position-bias": position_bias_figure(view.metrics)}
    confusions = {
        name: confusion_by_slice(view.holdout, log.detailed, checkpoint=name)
        for _, log in view.logs
        for name in dict.fromkeys(p.checkpoint_name for p in log.detailed)
    }
    if confusions:
        figures["confusion"] = confusion_figure(confusions)
    confidence = confidence_rows([log for _, log in view.logs], view.holdout)
    if confidence:
        figures["reliability"] = reliability_figure(confidence)
        figures["coverage"] = coverage_figure(confidence)
    out = {}
    for name, figure in figures.items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        out[name] = buffer.getvalue()
    return out


def log_paths(folder: Path) -> list[Path]:
    """The predictions files of an eval folder: `<judge>/predictions.json`, or the folder's own."""
    own = folder / "predictions.json"
    return [own] if own.is_file() else sorted(folder.glob("*/predictions.json"))


def _signature(folder: Path) -> tuple[Any, ...]:
    from biasjudge.config import DATA_DIR_ENV

    stats = []
    for path in log_paths(folder):
        stat = path.stat()
        stats.append((str(path), stat.st_mtime_ns, stat.st_size))
    return (str(folder), os.environ.get(DATA_DIR_ENV), os.getcwd(), *stats)


def load_view(folder: Path, signature: tuple[Any, ...] = ()) -> EvalView:
    """Read an eval folder and the holdout (never raises: a problem is put on the view)."""
    from biasjudge.config import DATA_DIR_ENV
    from biasjudge.eval.report import all_metrics, read_log
    from biasjudge.eval.run import HOLDOUT_NAME, jfs_folder, resolve_holdout

    view = EvalView(folder=folder, signature=signature)
    if not folder.is_dir():
        view.problem = f"{folder} is not a folder"
        return view
    paths = log_paths(folder)
    if not paths:
        view.problem = (
            f"{folder} holds no predictions.json (nor <judge>/predictions.json): "
            "write one with `biasjudge eval --out` this folder"
        )
        return view
    view.holdout_source = str(jfs_folder(None) / HOLDOUT_NAME)
    try:
        view.logs = [(path, read_log(path)) for path in paths]
        holdout = resolve_holdout(None, None, None)
    except BiasJudgeError as exc:
        view.problem = f"{exc} (the holdout is looked for in the data dir: set ${DATA_DIR_ENV})"
        return view
    predicted = {p.pair_id for _, log in view.logs for p in log.detailed}
    view.holdout = [p for p in holdout if p.pair_id in predicted]
    if not view.holdout:
        view.problem = (
            f"none of the predicted pairs is in the holdout {view.holdout_source} "
            f"(was the eval run on another holdout? set ${DATA_DIR_ENV})"
        )
        return view
    try:
        view.metrics = all_metrics([log for _, log in view.logs], view.holdout)
    except BiasJudgeError as exc:
        view.problem = str(exc)
        return view
    for _, log in view.logs:
        by_checkpoint: dict[str, dict[str, dict[str, Prediction]]] = {}
        for prediction in log.detailed:
            pairs = by_checkpoint.setdefault(prediction.checkpoint_name, {})
            pairs.setdefault(prediction.pair_id, {})[prediction.run_type] = prediction
        for checkpoint, by_pair in by_checkpoint.items():
            for pair in view.holdout:
                runs = by_pair.get(pair.pair_id)
                if not runs:
                    continue
                consistency = sorted(
                    (p for name, p in runs.items() if name.startswith("consistency_")), key=_run_number
                )
                view.rows.append(
                    PairRow(checkpoint, pair, runs.get("original"), runs.get("swapped"), tuple(consistency))
                )
    return view


def _run_number(prediction: Prediction) -> int:
    suffix = prediction.run_type.rsplit("_", 1)[-1]
    return int(suffix) if suffix.isdigit() else 0


# --------------------------------------------------------------------------- state on app.state


class WebState:
    """What the page keeps between requests (on `app.state.web`): templates and the loaded folder."""

    def __init__(self, settings: ServeSettings, templates: Jinja2Templates) -> None:
        self.settings = settings
        self.templates = templates
        self._lock = threading.Lock()
        self._view: EvalView | None = None

    def view(self) -> EvalView | None:
        """The eval folder (re-read when one of its predictions files changed), or None without one."""
        folder = self.settings.eval_dir
        if folder is None:
            return None
        signature = _signature(folder) if folder.is_dir() else (str(folder),)
        with self._lock:
            if self._view is None or self._view.signature != signature:
                self._view = load_view(folder, signature)
            return self._view


def _templates() -> Jinja2Templates:
    try:
        import jinja2
        from starlette.templating import Jinja2Templates
    except ImportError:
        raise MissingDependency("jinja2", "serve", "the web page") from None

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(WEB_DIR / "templates"),
        autoescape=True,  # responses and reasoning are untrusted text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = _pct
    env.filters["pair_url"] = lambda row: pair_url(row.checkpoint, row.pair.pair_id)
    env.globals.update(verdict_words=VERDICT_WORDS, plots=PLOTS, mirror=mirror)
    return Jinja2Templates(env=env)


def _pct(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value * 100:.1f}%"


# --------------------------------------------------------------------------- routes


def register(app: FastAPI) -> None:
    """Add the page's routes to `app` (its settings on `app.state.settings`)."""
    from starlette.staticfiles import StaticFiles

    settings: ServeSettings = app.state.settings
    missing = [d for d in (WEB_DIR / "templates", WEB_DIR / "static") if not d.is_dir()]
    if missing:  # a wheel built without the package data: say so rather than 500 on every page
        raise BiasJudgeError(f"the web page's files are missing from the installed package: {missing[0]}")
    state = WebState(settings, _templates())
    app.state.web = state
    templates = state.templates

    def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        batcher = request.app.state.batcher
        base = {
            "judge_loaded": batcher is not None,
            "judge_name": settings.judge or ("custom judge" if batcher is not None else None),
            "eval_dir": settings.eval_dir,
        }
        return templates.TemplateResponse(request, name, {**base, **context}, status_code=status)

    def not_found(request: Request, message: str) -> Response:
        return page(request, "message.html", {"title": "Not found", "message": message}, 404)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def judge_page(request: Request) -> Response:
        """The judge page."""
        prefill: dict[str, Any] | None = None
        pair_id = request.query_params.get("pair")
        view = state.view()
        if pair_id and view is not None:
            pair = next((p for p in view.holdout if p.pair_id == pair_id), None)
            if pair is not None:
                prefill = {
                    "id": pair.pair_id,
                    "question": pair.question_text,
                    "choices": [c.text for c in pair.answer_choices],
                    "response_a": pair.response_a.text,
                    "response_b": pair.response_b.text,
                }
        choices = list(prefill["choices"]) if prefill else []
        choices += [""] * max(0, 3 - len(choices))
        return page(
            request,
            "judge.html",
            {"prefill": prefill, "choices": choices, "max_choices": MAX_CHOICES, "example": EXAMPLE_PAIR},
        )

    @app.get("/eval", response_class=HTMLResponse, include_in_schema=False)
    def eval_page(request: Request) -> Response:
        """The browse page of the eval folder."""
        view = state.view()
        if view is None or view.problem:
            return page(request, "eval.html", {"view": view, "rows": [], "filters": RowFilter(), "options": {}})
        filters = view.row_filter(request.query_params)
        rows = [row for row in view.rows if filters.keeps(row)]
        context = {
            "view": view,
            "rows": rows,
            "filters": filters,
            "options": view.options(),
            "table": view.card_table(),
            "notes": _notes(),
            "version": abs(hash(view.signature)),
        }
        return page(request, "eval.html", context)

    @app.get("/eval/rows", response_class=HTMLResponse, include_in_schema=False)
    def eval_rows(request: Request) -> Response:
        """The per-pair table's rows for the given filters (an HTML fragment)."""
        view = _usable(state.view())
        filters = view.row_filter(request.query_params)
        rows = [row for row in view.rows if filters.keeps(row)]
        response = templates.TemplateResponse(request, "_rows.html", {"rows": rows})
        response.headers["x-rows"] = str(len(rows))
        return response

    # 404: the server browses no eval folder, or the folder holds no usable eval.
    @app.get("/eval/pairs.json", tags=["eval"], responses={404: {"model": ErrorBody}})
    def eval_pairs(request: Request) -> JSONResponse:
        """The per-pair rows of the eval folder (filters: checkpoint, slice, bucket, human, agreement, swap)."""
        view = _usable(state.view())
        filters = view.row_filter(request.query_params)
        rows = [row.as_json() for row in view.rows if filters.keeps(row)]
        return JSONResponse({"total": len(view.rows), "shown": len(rows), "rows": rows})

    @app.get("/eval/plots/{name}.png", include_in_schema=False)
    def eval_plot(name: str) -> Response:
        """One of the report's plots."""
        plots = _usable(state.view()).plots()
        if name not in plots:
            raise ApiError(404, "not_found", f"no plot {name!r}; there are {', '.join(plots)}")
        return Response(plots[name], media_type="image/png", headers={"cache-control": "private, max-age=300"})

    @app.get("/eval/pair/{checkpoint:path}/{pair_id}", response_class=HTMLResponse, include_in_schema=False)
    def pair_page(request: Request, checkpoint: str, pair_id: str) -> Response:
        """One judge on one pair: both verdicts, the reasoning, the other judges."""
        view = state.view()
        if view is None or view.problem:
            return not_found(request, "no evaluation is loaded")
        row = view.find(checkpoint, pair_id)
        if row is None:
            return not_found(request, f"no predictions of judge {checkpoint!r} on pair {pair_id!r} in {view.folder}")
        others = [r for r in view.rows if r.pair.pair_id == pair_id and r.checkpoint != checkpoint]
        return page(request, "pair.html", {"row": row, "others": others, "view": view})

    app.mount("/static", StaticFiles(directory=WEB_DIR / "static"), name="web-static")


def _usable(view: EvalView | None) -> EvalView:
    if view is None:
        raise ApiError(404, "no_eval", "this server browses no eval folder (start it with --eval-dir DIR)")
    if view.problem:
        raise ApiError(404, "no_eval", view.problem)
    return view


def _notes() -> str:
    from biasjudge.eval.report import NOTES

    return NOTES


__all__: Sequence[str] = ("EvalView", "PairRow", "RowFilter", "load_view", "register")
