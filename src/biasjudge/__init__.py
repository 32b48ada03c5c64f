"""biasjudge: build, evaluate and serve LLM judges of social bias."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from biasjudge.serve.client import AsyncClient, Client

__all__ = ["AsyncClient", "Client", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import biasjudge` (and every command) does not load httpx and the service schemas.
    if name in ("Client", "AsyncClient"):
        from biasjudge.serve import client

        return getattr(client, name)
    raise AttributeError(f"module 'biasjudge' has no attribute {name!r}")
