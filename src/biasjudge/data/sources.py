"""Where the pipeline's inputs come from: the local data folder, nyu-mll/BBQ on GitHub, the HF Hub.

The local layout (`../shared/data`, or wherever `--data-dir` points) is::

    <data_dir>/bbq/<Category>.jsonl            raw BBQ files, any subset of the 11
    <data_dir>/judge-from-scratch/*.jsonl      the reference project's files

Network paths (`download_bbq`, `load_hub_dataset`) are only used when a user asks for them; the
tests and the quick start read local files.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from biasjudge.errors import BiasJudgeError, ConfigError, DataError, MissingDependency
from biasjudge.io import validation_message
from biasjudge.records import Pair

BBQ_CATEGORIES: tuple[str, ...] = (
    "Age",
    "Disability_status",
    "Gender_identity",
    "Nationality",
    "Physical_appearance",
    "Race_ethnicity",
    "Race_x_SES",
    "Race_x_gender",
    "Religion",
    "SES",
    "Sexual_orientation",
)
"""The 11 official BBQ category files (`data/<name>.jsonl` in nyu-mll/BBQ)."""

BBQ_COMMIT = "bea11bd97d79217245b5871acd247b9d6eb24598"
"""The nyu-mll/BBQ commit the shared copy was taken from; downloads are pinned to it."""

BBQ_URL = "https://raw.githubusercontent.com/nyu-mll/BBQ/{commit}/data/{category}.jsonl"
"""Raw-file URL of one category file."""

HUB_DATASET = "krishnakartik/gemma4-social-bias-judge-pairs"
"""The reference project's data set on the Hugging Face Hub."""

HUB_CONFIGS: tuple[str, ...] = ("pairs", "pairs_to_label", "eval_holdout", "sft", "dpo")
"""Configs of HUB_DATASET."""

HUB_PAIR_CONFIGS: tuple[str, ...] = ("pairs", "pairs_to_label", "eval_holdout")
"""Configs whose rows are pairs (validated into Pair records); the others come back as dicts."""


def bbq_dir(data_dir: str | Path) -> Path:
    """The folder of raw BBQ category files inside a data folder."""
    return Path(data_dir) / "bbq"


def jfs_dir(data_dir: str | Path) -> Path:
    """The judge-from-scratch folder (bbq_sample.jsonl, pairs.jsonl, ...) inside a data folder."""
    return Path(data_dir) / "judge-from-scratch"


def resolve_categories(categories: Sequence[str] | None) -> list[str]:
    """Official file names for `categories` (any case; None = all 11); unknown names are an error."""
    if categories is None:
        return list(BBQ_CATEGORIES)
    by_lower = {c.lower(): c for c in BBQ_CATEGORIES}
    resolved: list[str] = []
    for name in categories:
        official = by_lower.get(name.lower())
        if official is None:
            raise ConfigError(f"unknown BBQ category {name!r}; known: {', '.join(BBQ_CATEGORIES)}")
        if official not in resolved:
            resolved.append(official)
    return resolved


def download_bbq(
    dest: str | Path,
    categories: Sequence[str] | None = None,
    *,
    commit: str = BBQ_COMMIT,
    timeout: float = 60.0,
    overwrite: bool = False,
) -> list[Path]:
    """Download raw BBQ category files from GitHub into `dest`; returns the paths written or kept.

    A file already present is kept unless `overwrite`. Each file is written atomically (temp file,
    then rename), so an interrupted download never leaves a half file behind.

    Raises:
        ConfigError: an unknown category name.
        BiasJudgeError: the network is unreachable or GitHub refused (the message says which URL).
    """
    names = resolve_categories(categories)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name in names:
        target = dest / f"{name}.jsonl"
        if target.exists() and not overwrite:
            written.append(target)
            continue
        url = BBQ_URL.format(commit=commit, category=name)
        tmp = target.with_name(f".{target.name}.part")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                tmp.write_bytes(response.read())
        except urllib.error.HTTPError as exc:
            tmp.unlink(missing_ok=True)
            raise BiasJudgeError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from None
        except (TimeoutError, urllib.error.URLError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            reason = getattr(exc, "reason", exc)
            raise BiasJudgeError(
                f"cannot download {url}: {reason}. Are you offline? Copy the BBQ files "
                f"(github.com/nyu-mll/BBQ, folder data/) into {dest} instead."
            ) from None
        tmp.replace(target)
        written.append(target)
    return written


def load_hub_dataset(config: str, *, split: str = "train", revision: str | None = None) -> list[Any]:
    """Rows of one config of the reference data set on the HF Hub (needs `datasets` and a network).

    Pair configs (pairs, pairs_to_label, eval_holdout) come back as validated Pair records; sft and
    dpo come back as plain dicts (their layout is the reference's, not ours).

    Raises:
        ConfigError: an unknown config.
        MissingDependency: `datasets` is not installed (extra `hub`).
        BiasJudgeError: the Hub could not be reached.
        DataError: a row that does not validate (naming the config, the row and the field).
    """
    if config not in HUB_CONFIGS:
        raise ConfigError(f"unknown config {config!r} of {HUB_DATASET}; known: {', '.join(HUB_CONFIGS)}")
    try:
        import datasets
    except ImportError:
        raise MissingDependency("datasets", "hub", "reading the Hugging Face data set") from None
    try:
        table = datasets.load_dataset(HUB_DATASET, config, split=split, revision=revision)
    except Exception as exc:  # the Hub client raises many types; all mean "could not load"
        raise BiasJudgeError(
            f"cannot load {HUB_DATASET} (config {config!r}) from the Hub: {exc}. "
            "Offline? Read the local judge-from-scratch files instead."
        ) from None
    rows = [dict(row) for row in table]
    if config not in HUB_PAIR_CONFIGS:
        return rows
    source = f"hf://{HUB_DATASET}/{config}/{split}"
    pairs: list[Pair] = []
    for number, row in enumerate(rows, start=1):
        try:
            pairs.append(Pair.model_validate(row))
        except ValidationError as exc:
            raise DataError(source, number, *validation_message(exc)) from None
    return pairs
