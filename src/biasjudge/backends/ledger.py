"""What cost control (:mod:`biasjudge.backends.costs`) reads and books: the price table (the shipped
`prices.yaml`, a user's file laid over it) and the ledger's lines, one per model call, with their
totals. :mod:`biasjudge.backends.costs` exports all of these too.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from biasjudge.config import ConfigModel, load_config, packaged_config
from biasjudge.errors import ConfigError
from biasjudge.io import read_records

log = logging.getLogger("biasjudge.backends.costs")  # the logger cost control has always warned on


# --------------------------------------------------------------------------- prices


class ModelPrice(ConfigModel):
    """What one model costs."""

    input: float = Field(ge=0)
    """USD per 1,000,000 prompt tokens."""
    output: float = Field(ge=0)
    """USD per 1,000,000 completion tokens."""

    def usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        """The price of one call.

        >>> ModelPrice(input=3.0, output=15.0).usd(1_000, 200)
        0.006
        """
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


class PriceTable(ConfigModel):
    """Prices by model name (a prices YAML file)."""

    as_of: date | str | None = None
    """When the prices were read off the providers' pages."""
    models: dict[str, ModelPrice] = Field(default_factory=dict)
    """Model name (or a shell-style pattern with * or ?) -> its price."""

    def price_of(self, model: str) -> ModelPrice | None:
        """The price of `model`: its exact entry, else the first pattern that matches, else None.

        >>> free = ModelPrice(input=0, output=0)
        >>> table = PriceTable(models={"gpt-4o": ModelPrice(input=2.5, output=10), "local-*": free})
        >>> table.price_of("gpt-4o").output, table.price_of("local-gemma").input, table.price_of("gpt-4o-mini")
        (10.0, 0.0, None)
        """
        if model in self.models:
            return self.models[model]
        for pattern, price in self.models.items():
            if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(model, pattern):
                return price
        return None


def load_prices(path: str | Path | None = None) -> PriceTable:
    """The shipped price table, with the entries of the YAML file `path` (if any) laid over it.

    Raises:
        ConfigError: `path` is missing, not YAML, or has an unknown key or a negative price.
    """
    shipped_path = packaged_config("prices")
    shipped = load_config(PriceTable, shipped_path) if shipped_path is not None else PriceTable()
    if path is None:
        return shipped
    path = Path(path)
    if not path.is_file():  # load_config would fall back to the shipped file of that name
        raise ConfigError(f"{path}: prices file not found" if not path.exists() else f"{path}: not a file")
    own = load_config(PriceTable, path)
    return PriceTable(as_of=own.as_of or shipped.as_of, models={**shipped.models, **own.models})


# --------------------------------------------------------------------------- the ledger


class LedgerEntry(BaseModel):
    """One model call, as a line of the ledger."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    time: str
    """When the call returned (ISO-8601, UTC)."""
    stage: str
    """The stage that made it: `candidates`, `teacher`, `synthesis`."""
    model: str
    """The model name it was priced under."""
    key: str
    """What it was for: the stage's resume key (question_id, pair_id; `pair_id#attempt` for synthesis)."""
    prompt_tokens: int = Field(ge=0)
    """Prompt tokens (the server's count unless `tokens_from` says otherwise)."""
    completion_tokens: int = Field(ge=0)
    """Completion tokens."""
    usd: float = Field(ge=0)
    """Its price; 0 for an unpriced model."""
    priced: bool = True
    """False when the model had no price (its `usd` is 0 and means nothing)."""
    tokens_from: Literal["server", "estimate", "in_flight"] = "server"
    """`server`: the reply's usage. `estimate`: counted here (the backend reported none).
    `in_flight`: a call a killed run had sent; booked at its upper bound."""
    call_id: str
    """Unique id of the call (matches an in-flight record to its ledger line)."""


def read_ledger(path: str | Path) -> list[LedgerEntry]:
    """The entries of a ledger file (none if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    result = read_records(path, LedgerEntry, allow_empty=True, skip_invalid=True)
    if result.rejects:  # a torn last line of a killed run: the next run that writes cuts it off
        log.warning("%s: %d unreadable line(s) left out", path, len(result.rejects))
    return result.records


@dataclass
class LedgerTotals:
    """Sums over ledger entries."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
    unpriced_calls: int = 0
    """Calls of models without a price (their USD is not in `usd`)."""

    def add(self, entry: LedgerEntry) -> None:
        """Count one ledger line into the totals."""
        self.calls += 1
        self.prompt_tokens += entry.prompt_tokens
        self.completion_tokens += entry.completion_tokens
        self.usd += entry.usd
        self.unpriced_calls += not entry.priced


def ledger_totals(entries: Sequence[LedgerEntry], stage: str | None = None) -> LedgerTotals:
    """Calls, tokens and USD of `entries` (of one stage when `stage` is given)."""
    totals = LedgerTotals()
    for entry in entries:
        if stage is None or entry.stage == stage:
            totals.add(entry)
    return totals
