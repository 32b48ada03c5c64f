"""A logistic regression stored as its numbers: the question reader's two regressions, the free-text
judge's and the router's category classifier are each one of these in their model files."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import PrivateAttr

from biasjudge.records import Record


class StoredLogistic(Record):
    """A fitted scikit-learn `LogisticRegression` kept as its classes, coefficients and intercepts.

    The estimator is rebuilt from them once, at the first prediction (a judge predicts for every
    pair it reads, and building the estimator cost more than predicting with it).
    """

    classes: list[str]
    coef: list[list[float]]
    intercept: list[float]
    _estimator: Any = PrivateAttr(default=None)

    def predict_proba(self, x: Any) -> np.ndarray:
        """(rows, classes) probabilities of the feature matrix `x` (dense or sparse)."""
        if self._estimator is None:
            from sklearn.linear_model import LogisticRegression

            model = LogisticRegression()
            model.classes_ = np.array(self.classes)
            model.coef_ = np.array(self.coef)
            model.intercept_ = np.array(self.intercept)
            self._estimator = model
        return np.asarray(self._estimator.predict_proba(x))
