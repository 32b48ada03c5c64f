"""The options of the commands: generated from stage configs (help and defaults written once, in the
config), `--config FILE.yaml` under the flags, and no default written both in a command and in the
function or config it hands the value to."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel
from typer.testing import CliRunner

from biasjudge.cli.common import config_parameters, option_groups
from biasjudge.cli.main import app
from biasjudge.config import load_config
from biasjudge.data.holdout import HoldoutConfig
from biasjudge.data.pairs import PairsConfig
from biasjudge.dataset.rows import RowsConfig
from biasjudge.errors import ConfigError
from biasjudge.recipes.pairwise import JudgeRecipeConfig
from biasjudge.serve.schemas import ServeSettings

runner = CliRunner()


def _commands(group: typer.Typer, prefix: str = "") -> Iterator[tuple[str, Callable[..., Any]]]:
    for info in group.registered_commands:
        assert info.callback is not None
        yield prefix + (info.name or info.callback.__name__), info.callback
    for sub in group.registered_groups:
        assert sub.typer_instance is not None
        yield from _commands(sub.typer_instance, f"{prefix}{sub.name} ")


def _written_defaults(function: Callable[..., Any]) -> tuple[ast.FunctionDef, dict[str, ast.expr]]:
    """The function's AST and the defaults written in its source (None, False and empty ones are
    absences, not defaults)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
    arguments = node.args
    positional = arguments.posonlyargs + arguments.args
    pairs = list(zip(positional[len(positional) - len(arguments.defaults) :], arguments.defaults, strict=True))
    pairs += [(a, d) for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True) if d is not None]
    written = {
        a.arg: d
        for a, d in pairs
        if not (isinstance(d, ast.Constant) and (d.value is None or d.value is False or d.value == ""))
        and not (isinstance(d, ast.List | ast.Tuple) and not d.elts)
    }
    return node, written


_PASSED_AS_IS = {"cast", "list", "tuple", "str", "int", "float", "Path"}
"""Calls that hand an option on unchanged in value (`cast("Mode", mode.value)`, `list(categories)`)."""


def _handed_on(value: ast.expr) -> str | None:
    """The option a keyword's value hands on as it is: `x`, `x.value`, or one of those through `cast(...)`,
    `list(...)`; None for anything computed from it."""
    if isinstance(value, ast.Name):
        return value.id
    if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name):
        return value.value.id
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in _PASSED_AS_IS:
        return _handed_on(value.args[-1]) if value.args else None
    return None


def _names_in_scope(function: Callable[..., Any], node: ast.FunctionDef) -> dict[str, Any]:
    """The module's globals and what the function body imports (commands import lazily)."""
    names = dict(vars(inspect.getmodule(function)))
    for found in ast.walk(node):
        if isinstance(found, ast.ImportFrom) and found.module:
            module = importlib.import_module(found.module)
            for alias in found.names:
                names[alias.asname or alias.name] = getattr(module, alias.name)
    return names


def _default_of(callee: Any, keyword: str) -> Any:
    """What `callee` declares as the default of `keyword` (inspect.Parameter.empty when none)."""
    if isinstance(callee, type) and issubclass(callee, BaseModel):
        field = callee.model_fields.get(keyword)
        return inspect.Parameter.empty if field is None or field.is_required() else field.get_default()
    try:
        parameter = inspect.signature(callee).parameters.get(keyword)
    except (TypeError, ValueError):
        return inspect.Parameter.empty
    return inspect.Parameter.empty if parameter is None else parameter.default


def _positional(callee: Any, call: ast.Call) -> list[tuple[str, ast.expr]]:
    """The callee's parameter names that a call's positional arguments fill."""
    try:
        parameters = list(inspect.signature(callee).parameters.values())
    except (TypeError, ValueError):
        return []
    named = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [(name, value) for name, value in zip(named, call.args, strict=False) if not isinstance(value, ast.Starred)]


def _group_defaults(function: Callable[..., Any]) -> dict[str, dict[str, ast.expr]]:
    """Option groups (dataclasses) among the function's parameters: parameter -> the defaults their
    fields write as literals in the class."""
    groups = {}
    for parameter in inspect.signature(function, eval_str=True).parameters.values():
        group = parameter.annotation
        if isinstance(group, type) and dataclasses.is_dataclass(group):
            body = ast.parse(textwrap.dedent(inspect.getsource(group))).body[0]
            assert isinstance(body, ast.ClassDef)
            groups[parameter.name] = {
                n.target.id: n.value
                for n in body.body
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and n.value is not None
                if isinstance(n.value, ast.Constant) and n.value.value is not None and n.value.value is not False
            }
    return groups


def _unpacked(call: ast.Call, groups: dict[str, dict[str, ast.expr]]) -> list[tuple[str, str]]:
    """(keyword, group field) for a group handed on whole: `f(**asdict(group))`."""
    found = []
    for keyword in call.keywords:
        value = keyword.value
        if keyword.arg is None and isinstance(value, ast.Call) and value.args:
            inner = value.args[0]
            if isinstance(inner, ast.Name) and inner.id in groups:
                found += [(field, field) for field in groups[inner.id]]
    return found


def _twice_written() -> list[str]:
    found = []
    for name, callback in _commands(app):
        function = inspect.unwrap(callback)
        node, written = _written_defaults(function)
        groups = _group_defaults(function)
        if not written and not groups:
            continue
        scope = _names_in_scope(function, node)
        for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
            if isinstance(call.func, ast.Name):
                callee = scope.get(call.func.id)
            elif isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name):
                callee = getattr(scope.get(call.func.value.id), call.func.attr, None)
            else:
                continue
            for target, field in _unpacked(call, groups):
                default = _default_of(callee, target)
                if default is not inspect.Parameter.empty and default is not None:
                    found.append(f"{name}: {field} -> {getattr(callee, '__qualname__', callee)}({target}={default!r})")
            for target, value in [*_positional(callee, call), *((k.arg, k.value) for k in call.keywords if k.arg)]:
                option = _handed_on(value)
                default = _default_of(callee, target)
                if option in written and default is not inspect.Parameter.empty and default is not None:
                    found.append(f"{name}: {option} -> {getattr(callee, '__qualname__', callee)}({target}={default!r})")
    return found


def test_every_default_is_written_once() -> None:
    """No command declares a default for an option that the function or config it hands the option to
    also declares: one of the two would go stale."""
    assert _twice_written() == []


def test_the_twice_written_finder_finds_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The finder sees a default written in a command and in the function it calls."""
    module = tmp_path / "twice_module.py"
    module.write_text(
        "def library(*, batch_size: int = 8) -> int:\n    return batch_size\n\n\n"
        "def command(batch_size: int = 8) -> None:\n    library(batch_size=batch_size)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    twice = importlib.import_module("twice_module")
    stand_in = typer.Typer()
    stand_in.command("twice")(twice.command)
    monkeypatch.setattr(f"{__name__}.app", stand_in)
    assert _twice_written() == ["twice: batch_size -> library(batch_size=8)"]


def test_serve_options_are_the_settings_fields() -> None:
    """Every ServeSettings field a flag can carry is an option of `serve`, with its help and default."""
    command = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    options = {p.name: p for p in command.params}
    for parameter in config_parameters(ServeSettings):
        field = ServeSettings.model_fields[parameter.name]
        assert options[parameter.name].help == field.description
        assert options[parameter.name].default == field.get_default(call_default_factory=True)
    assert set(options) == {p.name for p in config_parameters(ServeSettings)} | {"config_file"}
    assert "--request-timeout" in options["request_timeout_s"].opts


def test_a_bad_flag_value_names_the_flag() -> None:
    result = runner.invoke(app, ["serve", "--max-queue", "0"])
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception).startswith("--max-queue: ")


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["serve", "--request-timeout", "0"], "--request-timeout"),
        (["judge-file", "in.jsonl", "out.jsonl", "--ray-cpus", "0"], "--ray-cpus"),
    ],
)
def test_a_bad_value_of_a_renamed_flag_names_the_flag_typed(args: list[str], flag: str) -> None:
    """A field whose flag is not its own name (request_timeout_s, num_cpus): the error names the flag."""
    result = runner.invoke(app, args)
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception).startswith(f"{flag}: ")


def test_a_bad_config_value_names_the_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("max_queue: 0\n")
    result = runner.invoke(app, ["serve", "--config", str(config)])
    assert isinstance(result.exception, ConfigError)
    assert f"{config}: key 'max_queue'" in str(result.exception)


@pytest.fixture
def labelled_pairs(jfs: Path, tmp_path: Path) -> Path:
    """40 pairs labelled by the answer key, through `data label`."""
    small = tmp_path / "small.jsonl"
    small.write_text("".join((jfs / "pairs_to_label.jsonl").read_text().splitlines(keepends=True)[:40]))
    labelled = tmp_path / "labelled.jsonl"
    result = runner.invoke(app, ["data", "label", "--pairs", str(small), "--out", str(labelled)])
    assert result.exit_code == 0, result.output
    return labelled


def test_rows_reads_its_config_file_and_flags_override_it(labelled_pairs: Path, tmp_path: Path) -> None:
    """`data rows --config`: the file's values, then the flags given; the sidecars record the result."""
    import json

    config = tmp_path / "rows.yaml"
    config.write_text("validation_fraction: 0.5\ndpo_min_confidence: 5\n")
    out = tmp_path / "rows"
    args = ["data", "rows", "--pairs", str(labelled_pairs), "--out", str(out), "--config", str(config)]
    result = runner.invoke(app, [*args, "--dpo-min-confidence", "3"])
    assert result.exit_code == 0, result.output
    dpo = json.loads((out / "dpo.meta.json").read_text())["config"]
    assert dpo["validation_fraction"] == 0.5  # from the file
    assert dpo["min_confidence"] == 3  # the flag over the file
    assert json.loads((out / "sft.meta.json").read_text())["config"]["min_confidence"] is None  # default


def test_a_config_field_no_flag_can_carry_is_left_to_the_file() -> None:
    flags = {p.name for p in config_parameters(PairsConfig)}
    assert not flags & {"targets", "adversarial_split"}  # mappings: the YAML file only
    assert {"seed", "max_per_question", "cross_model"} <= flags
    assert {p.name for p in config_parameters(RowsConfig)} == set(RowsConfig.model_fields)


def test_a_yes_no_field_that_defaults_to_yes_can_be_turned_off_by_flag() -> None:
    """`--cross-model` defaults on: `--no-cross-model` turns it off (and `--strict` stays a plain switch)."""
    seen: list[PairsConfig | HoldoutConfig] = []

    def pairs_command(*, config: PairsConfig) -> None:
        seen.append(config)

    def split_command(*, config: HoldoutConfig) -> None:
        seen.append(config)

    probe = typer.Typer()
    probe.command("pairs")(option_groups(pairs_command))
    probe.command("split")(option_groups(split_command))
    for args, field, expected in (
        (["pairs"], "cross_model", True),
        (["pairs", "--no-cross-model"], "cross_model", False),
        (["split", "--strict"], "strict", True),
        (["split"], "strict", False),
    ):
        result = runner.invoke(probe, args)
        assert result.exit_code == 0, result.output
        assert getattr(seen.pop(), field) is expected, args


def test_a_config_with_a_packaged_default_file_reads_it_unless_given_another(tmp_path: Path) -> None:
    """`train judge` without --config reads the shipped recipe (its trl settings), the flags over it;
    with --config, that file instead."""
    seen: list[JudgeRecipeConfig] = []

    def recipe_command(*, recipe: JudgeRecipeConfig) -> None:
        seen.append(recipe)

    probe = typer.Typer()
    probe.command()(option_groups(recipe_command))
    shipped = load_config(JudgeRecipeConfig, JudgeRecipeConfig.default_file)
    assert shipped.trl  # the packaged file sets what the fields' defaults leave empty
    result = runner.invoke(probe, ["--leakage-level", "pair"])
    assert result.exit_code == 0, result.output
    assert seen[-1].trl == shipped.trl and seen[-1].leakage_level == "pair"
    own = tmp_path / "recipe.yaml"
    own.write_text("output_dir: runs/mine\n")
    result = runner.invoke(probe, ["-c", str(own)])
    assert result.exit_code == 0, result.output
    assert seen[-1].trl == {} and seen[-1].output_dir == Path("runs/mine")
