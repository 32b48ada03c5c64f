"""Judges from specs: the pair-judge schemes, and :func:`make_judge`, which builds any judge a spec names.

A spec string is parsed once into a :class:`~biasjudge.config.JudgeSpec`; its scheme names either a
model backend (registered in :mod:`biasjudge.backends.registry`; the model is wrapped in a
:class:`~biasjudge.judge.judge.Judge`) or a pair judge, registered here:

| scheme | judge |
|---|---|
| `reader:[ANALYSIS.json]` | the default judge: reads the question, then each response (no choices: `text:`) |
| `text:[TEXT.json]` | the free-text judge |
| `answer-key:[PAIRS.jsonl]`, `always-tie:`, `random:[SEED]` | baselines |
| `hybrid:[MODEL_SPEC]` | BBQ's answer key combined with a model judge's probabilities |
| `replay:PREDICTIONS.json` | the verdicts of a saved eval, judged again without a model |
| `route:ROUTER.json` | an in-distribution and an out-of-distribution judge, chosen per pair |

Both registries are tables filled where they are defined: importing a judge module registers
nothing, and a scheme's module is imported only when a judge of it is made. Judges made of other
judges (hybrid, route) are handed :func:`make_judge` as `build`, so that no judge module imports
this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from biasjudge.backends.registry import (
    DEFAULT_JUDGE_SPEC,
    SCHEMES,
    LazyClass,
    build_backend,
    construct,
    is_backend,
    unknown_scheme,
)
from biasjudge.config import JudgeSpec, split_judge_options
from biasjudge.errors import ConfigError
from biasjudge.records import JudgeMode

if TYPE_CHECKING:
    from biasjudge.judge.protocol import PairJudge
    from biasjudge.judge.shipped import AdapterManifest

__all__ = ["DEFAULT_JUDGE_SPEC", "PAIR_JUDGES", "WRAPPER_OPTIONS", "make_judge", "scheme_kind", "served_judge"]


@dataclass(frozen=True)
class PairJudgeScheme(LazyClass):
    """Where a pair judge's class lives (imported when a judge of it is made)."""

    builds_judges: bool = False
    """Its judge is made of other judges: it gets :func:`make_judge` as its `build` option."""


PAIR_JUDGES: dict[str, PairJudgeScheme] = {
    "answer-key": PairJudgeScheme("biasjudge.judge.baselines", "AnswerKeyJudge"),
    "always-tie": PairJudgeScheme("biasjudge.judge.baselines", "AlwaysTieJudge"),
    "random": PairJudgeScheme("biasjudge.judge.baselines", "RandomJudge"),
    "hybrid": PairJudgeScheme("biasjudge.judge.hybrid", "HybridJudge", builds_judges=True),
    "route": PairJudgeScheme("biasjudge.judge.router", "RouterJudge", builds_judges=True),
    "reader": PairJudgeScheme("biasjudge.judge.reading.judge", "ReadingJudge"),
    "text": PairJudgeScheme("biasjudge.judge.freetext", "TextJudge"),
    "replay": PairJudgeScheme("biasjudge.judge.replay", "ReplayJudge"),
}
"""The pair-judge schemes; add one here to add a pair judge."""


@dataclass(frozen=True)
class Wrappers:
    """What wraps a judge (options of any spec): its order, its calibration, its abstention."""

    order: str | None = None
    """`both` (each pair judged in both orders, combined) or `single`; None: the judge's default."""
    calibration: str | None = None
    """A calibration file (`biasjudge calibrate`), `none`, or None: the shipped judge's own."""
    abstain_below: Any = None
    """A probability: verdicts less sure than it become UNSURE; None never abstains."""


WRAPPER_OPTIONS = tuple(Wrappers.__dataclass_fields__)
"""The wrappers' options; they change verdicts, so given to :func:`make_judge` they are written
into the spec string."""

SHIPPED_TARGETS = ("", "embedded")
"""`llamacpp:` targets that name the shipped trained judge (`embedded-base` is the bare model)."""


def scheme_kind(spec: str | JudgeSpec) -> Literal["backend", "pair_judge"]:
    """'backend' for a model scheme, 'pair_judge' for a judge of whole pairs; unknown: BackendError."""
    parsed = JudgeSpec.parse(spec)
    if parsed.scheme in PAIR_JUDGES:
        return "pair_judge"
    if is_backend(parsed):
        return "backend"
    raise unknown_scheme(parsed, [*SCHEMES, *PAIR_JUDGES])


def make_judge(
    spec: str | JudgeSpec = DEFAULT_JUDGE_SPEC,
    *,
    system_prompt: str | None = None,
    mode: JudgeMode = "score",
    **options: Any,
) -> PairJudge:
    """The judge a spec names: a pair judge as it is, or `Judge(backend)` around a model backend.

    `options` join the spec's own (:class:`~biasjudge.config.JudgeSpec`), routed the same way: the
    judge's options (:data:`~biasjudge.config.JUDGE_OPTIONS`) go to
    :class:`~biasjudge.judge.judge.Judge`, the wrappers' (:data:`WRAPPER_OPTIONS`) wrap it, every
    other one goes to the backend's (or pair judge's) constructor, which names the
    options it takes when given one it does not. Pair judges ignore the judge's options, `order`
    and the system prompt (they read no prompt); calibration and abstention wrap any judge.

    The wrappers change verdicts, so given here they are written into the spec, which every
    Judgment records and the eval cache keys on.

    Trained adapters: `llamacpp:embedded` is biasjudge's pairwise judge, i.e. the embedded base
    with the packaged adapter (`lora_path`) and the system prompt it was trained with; a
    `lora_path` with a manifest beside it (`<adapter>.json`, written by `biasjudge train judge`)
    brings its prompt likewise. A different `system_prompt` is refused (ConfigError). Such judges
    combine both orders of every pair (`order=both`, an
    :class:`~biasjudge.judge.debiased.OrderDebiasedJudge`) unless `order=single`.

    Confidence (score mode): `calibration=PATH` maps the probabilities through a fitted
    calibration (`biasjudge calibrate`); the shipped pairwise judge applies its own
    `calibration.json` unless `calibration=none`. `abstain_below=P` turns a verdict whose top
    probability is under P into UNSURE. Both wrap the judge in a
    :class:`~biasjudge.judge.calibration.CalibratedJudge`.
    """
    parsed = JudgeSpec.parse(spec)
    options = {k: v for k, v in options.items() if not (k in WRAPPER_OPTIONS and v is None)}
    written = parsed.values()
    parsed = parsed.with_options(**{k: v for k, v in options.items() if k in WRAPPER_OPTIONS and k not in written})
    backend_options, judge_options = split_judge_options({**written, **options})
    wrappers = Wrappers(**{k: backend_options.pop(k) for k in WRAPPER_OPTIONS if k in backend_options})
    if scheme_kind(parsed) == "pair_judge":
        judge = _pair_judge(parsed, mode, backend_options)
    else:
        judge = _model_judge(parsed, mode, system_prompt, backend_options, judge_options, wrappers.order)
    return _with_confidence(judge, parsed, wrappers)


def _pair_judge(spec: JudgeSpec, mode: JudgeMode, options: dict[str, Any]) -> PairJudge:
    scheme = PAIR_JUDGES[spec.scheme]
    if scheme.builds_judges:
        options = {**options, "build": make_judge}
    judge: PairJudge = construct("judge", scheme.load(), spec, {"mode": mode, **options})
    return judge


def _model_judge(
    spec: JudgeSpec,
    mode: JudgeMode,
    system_prompt: str | None,
    options: dict[str, Any],
    judge_options: dict[str, Any],
    order: str | None,
) -> PairJudge:
    from biasjudge.judge.judge import Judge
    from biasjudge.judge.shipped import check_system_prompt, read_manifest, shipped_manifest

    if order not in (None, "both", "single"):
        raise ConfigError(f"order must be 'both' or 'single', got {order!r}")
    if spec.scheme == "llamacpp" and "adapter" in options:
        options["lora_path"] = options.pop("adapter")  # one option name for an adapter on every backend
    manifest = None
    if _is_shipped(spec):
        manifest = shipped_manifest()
        options.setdefault("lora_path", str(manifest.adapter))
    elif options.get("lora_path"):
        manifest = read_manifest(Path(str(options["lora_path"])))
    if manifest is not None:
        system_prompt = check_system_prompt(manifest, system_prompt)
        order = order or manifest.order
        # Judge in the turn format the adapter was trained with (recorded in its manifest).
        options.setdefault("chat_format", manifest.chat_format)
    judge = Judge(build_backend(spec, options), system_prompt=system_prompt, mode=mode, **judge_options)
    if (order or "single") == "single":
        return judge
    from biasjudge.judge.debiased import OrderDebiasedJudge

    return OrderDebiasedJudge(judge)


def _with_confidence(judge: PairJudge, spec: JudgeSpec, wrappers: Wrappers) -> PairJudge:
    """`judge` with its calibration (the shipped one's by default) and abstention, when it has any."""
    from biasjudge.judge.calibration import CALIBRATION_FILE, CalibratedJudge, read_calibration

    path: Any = wrappers.calibration
    if wrappers.calibration is None and _is_shipped(spec) and judge.mode == "score":
        from biasjudge.judge.shipped import shipped_dir

        shipped = shipped_dir() / CALIBRATION_FILE
        path = shipped if shipped.is_file() else None
    elif str(wrappers.calibration).lower() == "none":
        path = None
    if path is None and wrappers.abstain_below is None:
        return judge
    try:
        threshold = None if wrappers.abstain_below is None else float(wrappers.abstain_below)
    except ValueError:
        raise ConfigError(f"abstain_below must be a probability, got {wrappers.abstain_below!r}") from None
    return CalibratedJudge(judge, read_calibration(path) if path is not None else None, abstain_below=threshold)


def _is_shipped(spec: JudgeSpec) -> bool:
    return spec.scheme == "llamacpp" and spec.target in SHIPPED_TARGETS


def served_judge(spec: str, manifest: AdapterManifest, **options: Any) -> PairJudge:
    """A score-mode judge for this adapter's weights behind a server (`openai:URL#MODEL`), judging as
    the adapter was trained: its system prompt, turn format and order, and the calibration beside it
    (none when there is none). `options` go to the backend (`concurrency`, `max_retries`, ...)."""
    from biasjudge.judge.calibration import CALIBRATION_FILE

    calibration = manifest.adapter.parent / CALIBRATION_FILE
    return make_judge(
        spec,
        system_prompt=manifest.system_prompt,
        mode="score",
        order=manifest.order,
        chat_format=manifest.chat_format,
        calibration=str(calibration) if calibration.is_file() else "none",
        **options,
    )
