"""What an evaluation runs, as configs (`biasjudge eval`, `quickstart`, `robustness`, `calibrate`): each command's
flags are generated from these fields (their help is the docstring, their default is written here
only), and `--config FILE.yaml` gives them from a file. A leaf: records and config only, so the
commands' `--help` never imports the evaluation itself.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from biasjudge.config import ConfigModel
from biasjudge.records import JudgeMode


class JudgingSettings(ConfigModel):
    """How the judges of an evaluation are called."""

    mode: JudgeMode = "score"
    """generate: reasoning then verdict, read from text. score: one forward pass, verdict probabilities."""
    limit: int | None = Field(default=None, ge=1)
    """Judge only the first N holdout pairs."""
    batch_size: int = Field(default=8, ge=1)
    """Requests per judge call (one pair's runs stay together)."""


class EvalSettings(JudgingSettings):
    """What `biasjudge eval` and `biasjudge quickstart` run."""

    runs: str = "all"
    """'all' (original, swapped, consistency_0..4 at T=0.3), a comma list of run names, or N = original +
    swapped + N runs at T=0.3."""


class RobustnessSettings(JudgingSettings):
    """What `biasjudge robustness` runs."""

    limit: int | None = Field(default=None, ge=1)
    """Judge a subset of N holdout pairs, stratified over slices and buckets (default: all)."""
    batch_size: int = Field(default=16, ge=1)
    """Requests per judge call (a pair's twins stay together)."""
    twins: str | None = None
    """Comma list of twin or family names (injection, benign, length). Default: every twin."""


LabelChoice = Literal["human", "teacher", "answer_key"]
"""The labels a calibration is fitted against."""
CalibrationMethod = Literal["auto", "temperature", "isotonic"]
"""How a calibration map is fitted (`auto`: the one that cross-validates better)."""


class CalibrateSettings(ConfigModel):
    """How `biasjudge calibrate` fits its map."""

    labels: LabelChoice = "answer_key"
    """Which labels the probabilities are calibrated against: human, teacher or answer_key (the shipped
    judge's training labels)."""
    method: CalibrationMethod = "auto"
    """temperature (one T, verdicts unchanged), isotonic (per choice, can change verdicts), or auto: the one
    with the lower 5-fold cross-validated Brier score."""
    checkpoint: str | None = None
    """The judge of the log to calibrate (when it has several)."""
