"""One runner for the dataset stages that are pure functions of their files (classify, pairs, split, rows).

A stage is data (:class:`Stage`): its inputs (each with the reader that validates it), its config
(a pydantic model), the files it writes, and a pure function from the config and the inputs'
records to the output records and their counts. :func:`run_stage` does the rest, the same way for
every stage: it reads the inputs (counting them; with `skip_invalid`, invalid rows go to a
`.rejects.jsonl` side file; `on_read` reports each read as it happens), calls the function, and
writes each output atomically with its `.meta.json` sidecar (the inputs' sha256, the config, the
counts). The stages' commands are generated from the same declarations
(:func:`biasjudge.cli.data_stages.stage_command`). Nothing here prints.

The stages that call a model (candidates, teacher labels, hard negatives) append as they go and
resume after a kill; they keep their own loops (:mod:`biasjudge.dataset.stages`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from biasjudge.dataset.build import ReadReport, counting_reader, write_output
from biasjudge.errors import ConfigError
from biasjudge.io import ReadResult

C = TypeVar("C", bound=BaseModel)
R = TypeVar("R")

ONE_FILE = ""
"""The output name of a stage that writes one file: `out` is that file (else `out` is a folder)."""


@dataclass(frozen=True)
class StageInput:
    """One input file of a stage."""

    name: str
    """The stage function's keyword for its records, and the command's option (`--name`)."""
    help: str
    """What the file holds (the option's help)."""
    read: Callable[[Path, bool], ReadResult[Any]]
    """Reads and validates the file: (path, skip_invalid) -> records and rejects."""
    required: bool = True
    """False: the file may be left out, and the stage function then gets None for its records."""

    @property
    def flag(self) -> str:
        """The command's option for the file: `--name`, with hyphens."""
        return f"--{self.name.replace('_', '-')}"


@dataclass
class StageOutput(Generic[R]):
    """What a stage function returns."""

    records: dict[str, Sequence[BaseModel]]
    """Output name (:data:`ONE_FILE`, or the file's stem) -> the records to write."""
    result: R
    """What the command reports (counts, the split itself, ...)."""
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Output name -> the counts its sidecar records (besides `rows`)."""
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Output name -> the settings its sidecar records, where they are not the stage config's fields
    (an output made with some of them, or with settings worked out from them)."""
    made_from: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Output name -> the inputs it is made from, where not all of them (its sidecar hashes those)."""


@dataclass(frozen=True)
class Stage(Generic[C, R]):
    """A dataset stage declared as data (see the module docstring)."""

    name: str
    """The command (`data <name>`) and the sidecars' stage (`data/<name>`)."""
    help: str
    """What the stage does (the command's help)."""
    inputs: tuple[StageInput, ...]
    """The input files, in the order the command lists them."""
    config: type[C]
    """The stage's settings; the command's options are generated from its fields."""
    function: Callable[..., StageOutput[R]]
    """Pure: `function(config, **records_by_input_name)`."""
    outputs: tuple[str, ...] = (ONE_FILE,)
    """The files it writes: one (`out`), or `<out>/<name>.jsonl` for each name."""
    out_help: str = "Output JSONL."
    """What `--out` is."""


@dataclass
class StageRun(Generic[R]):
    """What :func:`run_stage` did."""

    result: R
    """The stage function's result."""
    files: dict[str, Path]
    """Output name -> the file written."""
    reads: list[ReadReport]
    """The input files read, in order."""


def run_stage(
    stage: Stage[C, R],
    config: C,
    inputs: Mapping[str, Path],
    out: Path,
    *,
    skip_invalid: bool = False,
    on_read: Callable[[ReadReport], None] | None = None,
) -> StageRun[R]:
    """Read `inputs` (input name -> file; an optional one may be None or absent), run `stage` with
    `config`, write its outputs to `out`.

    Raises:
        ConfigError: a required input is not given.
    """
    given = {name: path for name, path in inputs.items() if path is not None}
    missing = [i.flag for i in stage.inputs if i.required and i.name not in given]
    if missing:
        raise ConfigError(f"data {stage.name}: no {', '.join(missing)} given")
    folder = out.parent if stage.outputs == (ONE_FILE,) else out
    folder.mkdir(parents=True, exist_ok=True)
    reads: list[ReadReport] = []
    read = counting_reader(reads, folder, on_read)
    records = {i.name: read(i.read(given[i.name], skip_invalid)) if i.name in given else None for i in stage.inputs}
    output = stage.function(config, **records)
    files: dict[str, Path] = {}
    for name in stage.outputs:
        files[name] = out if name == ONE_FILE else out / f"{name}.jsonl"
        made_from = output.made_from.get(name, tuple(i.name for i in stage.inputs))
        write_output(
            files[name],
            output.records[name],
            stage=f"data/{stage.name}" + (f"/{name}" if name else ""),
            inputs=[given[n] for n in made_from if n in given],
            config=output.configs.get(name, config.model_dump(mode="json")),
            counts=output.counts.get(name),
        )
    return StageRun(output.result, files, reads)
