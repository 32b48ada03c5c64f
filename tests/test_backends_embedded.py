"""The embedded MiniLM embedder: a text embedded once is not embedded again, and gives the same vector."""

from __future__ import annotations

import numpy as np
import pytest

from biasjudge.backends import embedded


def test_remembered_embeddings_equal_fresh_ones_and_the_oldest_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "MINILM_MEMO_SIZE", 2)
    embedded._minilm_memo().clear()
    texts = ["The nurse was kind.", "He is an engineer.", "The nurse was kind."]
    first = embedded.minilm_embeddings(texts)
    fresh = embedded._minilm().encode(texts[:2], normalize_embeddings=True)
    assert first.shape == (3, embedded.MINILM_DIMENSION)
    assert np.allclose(first[:2], fresh, atol=1e-5) and np.array_equal(first[0], first[2])
    assert list(embedded._minilm_memo()) == ["He is an engineer.", "The nurse was kind."]  # least recent first
    embedded.minilm_embeddings(["A third sentence."])
    assert list(embedded._minilm_memo()) == ["The nurse was kind.", "A third sentence."]
    assert embedded.minilm_embeddings([]).shape == (0, embedded.MINILM_DIMENSION)
