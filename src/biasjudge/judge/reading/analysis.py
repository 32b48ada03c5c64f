"""Step 1 of the question-reading judge: read the question, before and apart from the responses.

Given a question (its context included) and its choices, the analysis gives two probability
vectors over the choices:

* `correct`: which option the context supports. A BBQ context either leaves the question open
  (the "unknown" option is right) or goes on to say who did it. The people the options name are
  first replaced by placeholders in order of mention (:mod:`.entities`), so the text says how the
  passage assigns the attribute, not who the people are, and a logistic regression over its word
  n-grams (TF-IDF) and the number of times the people are mentioned gives P(unknown), P(X), P(Y).
  An extra last entry is P(no option is supported): an open context with no "unknown" option.
* `target`: which option a stereotype would give: a logistic regression per option over pairs of
  (a word of the question, a word of the option), normalised over the options that name people.

Both are fitted on BBQ items (:func:`fit_analysis`, `biasjudge train reader`) with their metadata as
labels and stored as numbers in a JSON file (no pickle): the shipped one is
`biasjudge/assets/reading-judge/analysis.json`. The responses never enter either model.

Which model: the 270M with a LoRA and MiniLM fine-tuned as a cross-encoder were tried first on the
raw text (bench/question_analysis.py): both learnt "ambiguous or not" and stayed at chance on WHO a
disambiguated context names, within the CPU budget; the anonymised text is what makes it learnable.
A regression over n-grams learns the templates it has seen (other names, same wording): on BBQ
templates it never saw it is at chance on who, and the card reports both levels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, PrivateAttr

from biasjudge.errors import ConfigError
from biasjudge.judge.logistic import StoredLogistic
from biasjudge.judge.reading.entities import anonymize
from biasjudge.judge.reading.explain import is_unknown_option
from biasjudge.records import Record

if TYPE_CHECKING:
    from biasjudge.records import AnalysisRow

ANALYSIS_VERSION = 1
"""Bumped when the features change (a model file of another version is refused)."""
MAX_CHOICES = 5
MENTION_BINS = 8
"""Mentions of the people in the context, one-hot 0..7 (7: seven or more)."""
_QUESTION = re.compile(r"(?s)^(.*?)([^.!?]*\?)\s*$")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_TOKEN = re.compile(r"[a-z0-9]+")
_HOLDS_PLACEHOLDER = re.compile(r"(?:^|_)[xyzwv](?:_|$)")
_QUESTION_WORDS = {"who", "whom", "whose", "which", "what", "the", "a", "an", "is", "was", "were", "are", "of"}


def split_question(text: str) -> tuple[str, str]:
    """(context, question) of a judge's question text: the question is its last sentence ending in '?'.

    >>> split_question("A nurse and a pilot met. Who was late?")
    ('A nurse and a pilot met.', 'Who was late?')
    >>> split_question("Describe a nurse.")
    ('Describe a nurse.', '')
    """
    match = _QUESTION.match(text.strip())
    if match is None:
        return text.strip(), ""
    return match.group(1).strip(), match.group(2).strip()


class LinearModel(StoredLogistic):
    """A logistic regression over TF-IDF features (and a few dense ones), stored as its numbers."""

    vocabulary: dict[str, int]
    """Feature (n-gram or token) -> column."""
    idf: list[float]
    ngram_max: int = Field(default=1, ge=1)
    token_pattern: str = r"(?u)\b\w\w+\b"
    """How the text is split into tokens (scikit-learn's default: words of two characters or more)."""
    dense: int = Field(default=0, ge=0)
    """Dense features appended after the TF-IDF columns."""
    _vectorizer: Any = PrivateAttr(default=None)
    """The TF-IDF vectorizer these numbers make, built at the first call (as the regression is)."""

    def probabilities(self, texts: Sequence[str], dense: np.ndarray | None = None) -> np.ndarray:
        """(len(texts), len(classes)) probabilities."""
        import scipy.sparse as sp

        if self._vectorizer is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            self._vectorizer = TfidfVectorizer(
                sublinear_tf=True, ngram_range=(1, self.ngram_max), token_pattern=self.token_pattern
            )
            self._vectorizer.vocabulary_ = self.vocabulary
            self._vectorizer.idf_ = np.array(self.idf)
        matrix = self._vectorizer.transform(list(texts))
        if self.dense:
            matrix = sp.hstack([matrix, sp.csr_matrix(dense)]).tocsr()
        return self.predict_proba(matrix)


class AnalysisModel(Record):
    """The question analysis: the supported-option and the stereotype-target regressions."""

    version: int = ANALYSIS_VERSION
    answer: LinearModel
    """Anonymised question and context -> U (unknown) / X / Y."""
    target: LinearModel
    """(question word, option word) pairs -> is this option the stereotype's (0/1)."""
    fitted_on: dict[str, Any] = Field(default_factory=dict)
    """What it was fitted on: rows, categories, leakage level, settings."""


@dataclass(frozen=True)
class QuestionAnalysis:
    """Probabilities over a question's choices (in order)."""

    correct: tuple[float, ...]
    """P(the context supports option i), then P(it supports none of them) as the last entry."""
    target: tuple[float, ...]
    """P(option i is the answer a stereotype would give)."""

    @property
    def best_correct(self) -> int:
        """The likeliest supported option (len(choices): none of them)."""
        return int(np.argmax(self.correct))

    @property
    def best_target(self) -> int:
        """The likeliest stereotyped option."""
        return int(np.argmax(self.target))


def _ngrams(words: Sequence[str], n_max: int) -> list[str]:
    return ["_".join(words[i : i + n]) for n in range(1, n_max + 1) for i in range(len(words) - n + 1)]


def answer_text(question: str, choices: Sequence[str]) -> tuple[str, np.ndarray, tuple[str | None, ...]]:
    """The supported-option model's input: its features as tokens, the mention features, and each
    choice's placeholder.

    The tokens are the anonymised question's and context's word n-grams (1 to 3), and every pair of
    a question word with a context n-gram that holds a placeholder: which person the context puts
    next to which words matters only with what the question asks (the same passage answers "who
    forgot?" with X and "who remembered?" with Y), and a linear model sees that only in pairs.

    >>> tokens, _, places = answer_text("A boy and a girl came. The girl forgot. Who forgot?", ["The boy", "The girl"])
    >>> places, "forgot~the_y" in tokens.split(), "forgot~y_forgot" in tokens.split()
    (('X', 'Y'), True, True)
    """
    context, asked = split_question(question)
    anon = anonymize(asked, context, choices)
    mentions = np.zeros(MENTION_BINS)
    mentions[min(anon.mentions, MENTION_BINS - 1)] = 1.0
    words_q = _TOKEN.findall(anon.question.lower())
    words_c = _TOKEN.findall(anon.context.lower())
    grams_c = _ngrams(words_c, 3)
    held = [g for g in grams_c if _HOLDS_PLACEHOLDER.search(g)]
    asks = [w for w in words_q if w not in _QUESTION_WORDS]
    tokens = [*(f"q:{g}" for g in _ngrams(words_q, 3)), *grams_c, *(f"{w}~{g}" for w in asks for g in held)]
    return " ".join(tokens), mentions, anon.placeholders


def target_text(question: str, option: str) -> str:
    """The target model's input for one option: its words, and each (question word, option word) pair.

    >>> target_text("An old man and a boy met. Who forgot?", "The old man")
    'o:old o:man forgot|old forgot|man'
    """
    asked = split_question(question)[1] or question
    words_q = [w for w in _WORD.findall(asked.lower()) if w not in _QUESTION_WORDS]
    words_o = [w for w in _WORD.findall(option.lower()) if w not in _QUESTION_WORDS]
    return " ".join([*(f"o:{o}" for o in words_o), *(f"{q}|{o}" for q in words_q for o in words_o)])


def _spread(probability: float, indices: Sequence[int], into: list[float]) -> None:
    for i in indices:
        into[i] += probability / len(indices)


def analyze(model: AnalysisModel, question: str, choices: Sequence[str]) -> QuestionAnalysis:
    """The analysis of one question (see the module docstring)."""
    if not 2 <= len(choices) <= MAX_CHOICES:
        raise ConfigError(f"the question analysis takes 2 to {MAX_CHOICES} choices, got {len(choices)}")
    text, mentions, placeholders = answer_text(question, choices)
    probs = model.answer.probabilities([text], mentions[None, :])[0]
    n = len(choices)
    unknown = [i for i, c in enumerate(choices) if is_unknown_option(c)]
    persons = [i for i in range(n) if i not in unknown]
    unplaced = [i for i in persons if placeholders[i] is None]
    correct = [0.0] * (n + 1)
    for cls, p in zip(model.answer.classes, probs, strict=True):
        if cls == "U":
            _spread(float(p), unknown or [n], correct)
        else:
            named = [i for i in persons if placeholders[i] == cls]
            _spread(float(p), named or unplaced or [n], correct)
    target = [0.0] * n
    if persons:
        scores = model.target.probabilities([target_text(question, choices[i]) for i in persons])[:, 1]
        total = float(scores.sum())
        for i, score in zip(persons, scores, strict=True):
            target[i] = float(score) / total if total > 0 else 1 / len(persons)
    else:
        target = [1 / n] * n
    return QuestionAnalysis(tuple(correct), tuple(target))


def _fit(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    dense: np.ndarray | None,
    ngram_max: int,
    token_pattern: str,
    c: float,
) -> LinearModel:
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, ngram_max), token_pattern=token_pattern, min_df=2)
    matrix = vectorizer.fit_transform(list(texts))
    if dense is not None:
        matrix = sp.hstack([matrix, sp.csr_matrix(dense)]).tocsr()
    model = LogisticRegression(C=c, max_iter=5000, random_state=0).fit(matrix, list(labels))
    return LinearModel(
        vocabulary={k: int(v) for k, v in vectorizer.vocabulary_.items()},
        idf=[round(float(x), 5) for x in vectorizer.idf_],
        ngram_max=ngram_max,
        token_pattern=token_pattern,
        dense=0 if dense is None else dense.shape[1],
        classes=[str(x) for x in model.classes_],
        coef=[[round(float(x), 5) for x in row] for row in model.coef_],
        intercept=[round(float(x), 5) for x in model.intercept_],
    )


def fit_analysis(
    rows: Sequence[AnalysisRow], *, c: float = 10.0, fitted_on: dict[str, Any] | None = None
) -> AnalysisModel:
    """Fit both regressions on question-analysis rows (their `train` split is the caller's choice)."""
    if not rows:
        raise ConfigError("fit_analysis: no rows to fit on")
    texts, mentions, labels = [], [], []
    target_texts, target_labels = [], []
    for row in rows:
        text, dense, placeholders = answer_text(row.question, row.choices)
        texts.append(text)
        mentions.append(dense)
        labels.append(placeholders[row.answer] or "U")
        for i, option in enumerate(row.choices):
            if not is_unknown_option(option):
                target_texts.append(target_text(row.question, option))
                target_labels.append(str(int(i == row.target)))
    answer = _fit(texts, labels, dense=np.array(mentions), ngram_max=1, token_pattern=r"\S+", c=c)
    target = _fit(target_texts, target_labels, dense=None, ngram_max=1, token_pattern=r"\S+", c=c)
    return AnalysisModel(answer=answer, target=target, fitted_on=fitted_on or {"rows": len(rows)})
