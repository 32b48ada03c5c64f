"""Configs as files: a YAML file gives values, command-line flags override them.

A config class is a pydantic model whose fields carry help text (attribute docstrings).
Unknown keys and bad values raise :class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from biasjudge.errors import ConfigError
from biasjudge.io import read_text, validation_message

C = TypeVar("C", bound=BaseModel)

DATA_DIR_ENV = "BIASJUDGE_DATA_DIR"


def cache_dir() -> Path:
    """biasjudge's cache folder (`$XDG_CACHE_HOME/biasjudge`, else `~/.cache/biasjudge`)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "biasjudge"


class ConfigModel(BaseModel):
    """Base of config classes: unknown keys are errors, field docstrings become help text."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


def load_config(cls: type[C], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> C:
    """Build `cls` from a YAML file (optional) and flag overrides (None values are ignored).

    Raises:
        ConfigError: the file is missing or not a mapping, or a key is unknown or has a bad value.
    """
    values: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = packaged_config(path) or Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found" if not path.exists() else f"{path}: not a file")
        try:
            # Trailing whitespace is stripped: YAML refuses a tab after a value, a user never means one.
            text = "\n".join(line.rstrip() for line in read_text(path).splitlines())
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        key, message = validation_message(exc)
        raise ConfigError(f"{source}: key '{key or '(config)'}': {message}") from None


def packaged_config(name: str | Path) -> Path | None:
    """The config shipped in the package for `name`, when `name` is not a file here.

    `sft-cpu`, `sft-cpu.yaml` and `configs/sft-cpu.yaml` all name `biasjudge/configs/sft-cpu.yaml`,
    so the commands in the README work from an installed wheel too. An existing file always wins.
    """
    from importlib import resources

    path = Path(name)
    if path.exists():
        return None
    filename = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    shipped = resources.files("biasjudge").joinpath("configs", filename)
    return Path(str(shipped)) if shipped.is_file() else None


def resolve_data_dir(explicit: str | Path | None = None) -> Path:
    """Where the shared data lives: the explicit path, else $BIASJUDGE_DATA_DIR, else `../shared/data`.

    `../shared/data` is looked for beside the current directory and beside each of its parents,
    so commands work from anywhere inside a checkout.
    """
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        candidate = folder.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return here.parent / "shared" / "data"
