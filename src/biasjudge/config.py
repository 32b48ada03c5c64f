"""Configs as files: a YAML file gives values, command-line flags override them; and the judge
spec (:class:`JudgeSpec`), a judge's config written as one string.

A config class is a pydantic model whose fields carry help text (attribute docstrings).
Unknown keys and bad values raise :class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from biasjudge.errors import BackendError, ConfigError
from biasjudge.io import read_text, validation_message

C = TypeVar("C", bound=BaseModel)

DATA_DIR_ENV = "BIASJUDGE_DATA_DIR"


def cache_dir() -> Path:
    """biasjudge's cache folder (`$XDG_CACHE_HOME/biasjudge`, else `~/.cache/biasjudge`)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "biasjudge"


class ConfigModel(BaseModel):
    """Base of config classes: unknown keys are errors, field docstrings become help text."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    default_file: ClassVar[str | None] = None
    """A packaged config (:func:`packaged_config`) that a command reads when it is given no `--config`;
    None: the fields' own defaults."""


def field_flags(name: str, field: FieldInfo) -> list[str]:
    """The command-line flags of a config field: `--field-name` (`--field-name/--no-field-name` for a
    yes/no field, so that a default of True can be turned off), or those its
    `json_schema_extra={"flags": [...]}` names (for flags older than their field)."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    flag = name.replace("_", "-")
    named = cast("list[str] | None", extra.get("flags"))
    return list(named or [f"--{flag}/--no-{flag}" if field.annotation is bool else f"--{flag}"])


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
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    values.update(flags)
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        key, message = validation_message(exc)
        if key in flags:  # the value came from a flag, not from the file: name the flag the user typed
            flag = field_flags(key, cls.model_fields[key])[0].split("/")[0]
            raise ConfigError(f"{flag}: {message}") from None
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


# --------------------------------------------------------------------------- judge specs

JUDGE_OPTIONS = ("parse_mode", "max_tokens", "score_with_reasoning", "batch_size", "constrained")
"""Options of a model judge (:class:`biasjudge.judge.judge.Judge`), not of its backend."""
BACKEND_PREFIX, JUDGE_PREFIX = "backend.", "judge."
"""Where a name is both a backend's and the judge's option (`batch_size`), `backend.batch_size=`
sends it to the backend; a bare name goes to the judge, as it always did."""


def option_value(text: str) -> Any:
    """An option's value as a spec gives it: `true`/`false` are booleans, numbers int or float.

    >>> option_value("false"), option_value("2048"), option_value("0.5"), option_value("a.gguf")
    (False, 2048, 0.5, 'a.gguf')
    """
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


@dataclass(frozen=True)
class JudgeSpec:
    """A judge spec, parsed once at the edge: `SCHEME:TARGET?key=value&key=value`.

    The options keep the order they were written in, so that `str(spec)` gives the string back
    (the eval cache and every Judgment record it); typed views split them into the judge's options
    and the rest, the backend's (or a pair judge's), of which :func:`biasjudge.judge.make_judge`
    takes the wrappers' (`order`, `calibration`, `abstain_below`).

    >>> spec = JudgeSpec.parse("llamacpp:model.gguf?lora_path=a.gguf&batch_size=4&backend.batch_size=2&order=both")
    >>> spec.scheme, spec.target, spec.backend_options, spec.judge_options
    ('llamacpp', 'model.gguf', {'lora_path': 'a.gguf', 'batch_size': 2, 'order': 'both'}, {'batch_size': 4})
    >>> str(spec.with_options(order="single"))
    'llamacpp:model.gguf?lora_path=a.gguf&batch_size=4&backend.batch_size=2&order=single'
    """

    scheme: str
    """The registered scheme (`reader`, `llamacpp`, `hf`, `answer-key`, ...), lower case."""
    target: str = ""
    """What follows the colon: a model, a file, a URL, or nothing."""
    options: tuple[tuple[str, str], ...] = ()
    """The `?key=value` options as written, in order."""

    @classmethod
    def parse(cls, text: str | JudgeSpec) -> JudgeSpec:
        """The spec of `text`; a string without `SCHEME:`, an option without `=` or a `judge.` option
        that does not exist raises BackendError (whether the scheme exists is the registries' to say)."""
        if isinstance(text, JudgeSpec):
            return text
        base, sep, query = text.partition("?")
        scheme, colon, target = base.partition(":")
        if not colon:
            hint = " (for a GGUF file, write 'llamacpp:PATH.gguf')" if text.endswith(".gguf") else ""
            raise BackendError(f"a judge spec must look like SCHEME:TARGET, got {text!r}{hint}")
        options: list[tuple[str, str]] = []
        for item in query.split("&") if sep else ():
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise BackendError(f"judge spec {text!r}: options after '?' must be key=value, got {item!r}")
            options.append((key.strip(), value.strip()))
        spec = cls(scheme.strip().lower(), target.strip(), tuple(options))
        split_judge_options(spec.values())  # a `judge.` option that does not exist fails here
        return spec

    def __str__(self) -> str:
        query = "&".join(f"{key}={value}" for key, value in self.options)
        return f"{self.scheme}:{self.target}" + (f"?{query}" if query else "")

    @property
    def base(self) -> str:
        """`SCHEME:TARGET`, without options."""
        return f"{self.scheme}:{self.target}"

    def with_options(self, **values: Any) -> JudgeSpec:
        """This spec with each option set (replaced where written, else added at the end)."""
        options = dict(self.options)
        options.update({key: str(value) for key, value in values.items()})
        return JudgeSpec(self.scheme, self.target, tuple(options.items()))

    def values(self) -> dict[str, Any]:
        """Every option, typed (see :func:`option_value`), under the name it was written with."""
        return {key: option_value(value) for key, value in self.options}

    @property
    def backend_options(self) -> dict[str, Any]:
        """Options for the backend's constructor (or the pair judge's, for a pair-judge scheme), and
        the wrappers' (:data:`biasjudge.judge.registry.WRAPPER_OPTIONS`)."""
        return split_judge_options(self.values())[0]

    @property
    def judge_options(self) -> dict[str, Any]:
        """Options of the model judge (:data:`JUDGE_OPTIONS`)."""
        return split_judge_options(self.values())[1]


def split_judge_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(backend options, judge options) of a flat set of options, as :class:`JudgeSpec` routes its
    own: `backend.`/`judge.` prefixes first, then the names of :data:`JUDGE_OPTIONS`; every other
    name is the backend's."""
    backend: dict[str, Any] = {}
    judge: dict[str, Any] = {}
    for key, value in options.items():
        if key.startswith(BACKEND_PREFIX):
            backend[key.removeprefix(BACKEND_PREFIX)] = value
        elif key.startswith(JUDGE_PREFIX) or key in JUDGE_OPTIONS:
            name = key.removeprefix(JUDGE_PREFIX)
            if name not in JUDGE_OPTIONS:
                raise BackendError(f"judge option {name!r} does not exist; a judge takes: {', '.join(JUDGE_OPTIONS)}")
            judge[name] = value
        else:
            backend[key] = value
    return backend, judge
