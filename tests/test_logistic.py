"""A logistic regression stored as its numbers predicts what the fitted estimator predicts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from biasjudge.judge.logistic import StoredLogistic


@pytest.mark.parametrize("n_classes", [2, 3])
def test_stored_numbers_predict_as_the_fitted_estimator(n_classes: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    y = [str(v) for v in rng.integers(0, n_classes, size=60)]
    fitted = LogisticRegression(max_iter=1000).fit(x, y)
    stored = StoredLogistic(
        classes=[str(c) for c in fitted.classes_], coef=fitted.coef_.tolist(), intercept=fitted.intercept_.tolist()
    )
    again = StoredLogistic.model_validate_json(stored.model_dump_json())  # as read back from a model file
    assert np.allclose(again.predict_proba(x), fitted.predict_proba(x))
    built = again._estimator
    again.predict_proba(x[:2])
    assert again._estimator is built  # rebuilt once, not per call
