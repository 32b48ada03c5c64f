"""Holds every module's imports to the table in ARCHITECTURE.md ("Imports that never happen")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "biasjudge"
HEAVY = {"torch", "transformers", "trl", "peft", "vllm", "llama_cpp", "ray", "fastapi", "datasets", "matplotlib"}
STDLIB = set(sys.stdlib_module_names)
DATA_STAGES = ["sources", "bbq", "candidates", "classify", "pairs", "holdout"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module top level?) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    # Imports under `if TYPE_CHECKING:` never run, so they count as not top level.
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Try | ast.If):
            top_level.update(id(child) for child in ast.walk(node))
    found: list[tuple[str, bool]] = []
    package = _module_name(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((module, id(node) in top_level))
            found += [(f"{module}.{alias.name}", id(node) in top_level) for alias in node.names]
    return found


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _biasjudge_imports(name: str) -> set[str]:
    return {m for m, _ in _imports(MODULES[name]) if m.startswith("biasjudge.")}


def _under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("name", ["biasjudge.records", "biasjudge.verdict", "biasjudge.errors"])
def test_core_modules_import_only_core_and_pydantic(name: str) -> None:
    # verdict takes its Verdict types from records; both stay free of everything else.
    allowed = ("biasjudge.errors", "biasjudge.records")
    for module, _ in _imports(MODULES[name]):
        root = module.split(".")[0]
        if root == "biasjudge":
            assert _under(module, *allowed), f"{name} imports {module}"
        else:
            assert root in STDLIB or root in {"pydantic", "__future__"}, f"{name} imports {module}"


METRICS = [n for n in MODULES if n == "biasjudge.eval.metrics" or n.startswith("biasjudge.eval.metrics_")]


@pytest.mark.parametrize("name", METRICS)
def test_metrics_are_pure(name: str) -> None:
    # eval.metrics and the modules it is split into (eval.metrics_*) import one another and the core only.
    allowed_third_party = {"numpy", "sklearn", "__future__"}
    for module, _ in _imports(MODULES[name]):
        root = module.split(".")[0]
        if root == "biasjudge":
            assert _under(module, "biasjudge.records", "biasjudge.verdict", "biasjudge.errors", *METRICS), module
        else:
            assert root in STDLIB or root in allowed_third_party, f"eval.metrics imports {module}"


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("biasjudge.data.")])
def test_data_stages_flow_one_way(name: str) -> None:
    later_packages = (
        "biasjudge.labels",
        "biasjudge.dataset",
        "biasjudge.recipes",
        "biasjudge.train",
        "biasjudge.judge",
        "biasjudge.eval",
        "biasjudge.serve",
        "biasjudge.batch",
        "biasjudge.cli",
    )
    stage = name.rsplit(".", 1)[1]
    later_stages = DATA_STAGES[DATA_STAGES.index(stage) + 1 :] if stage in DATA_STAGES else []
    for module in _biasjudge_imports(name):
        assert not _under(module, *later_packages), f"{name} imports {module}"
        later = tuple(f"biasjudge.data.{s}" for s in later_stages)
        assert not _under(module, *later), f"{name} imports later stage {module}"


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("biasjudge.train")])
def test_train_reads_rows_not_pipeline_internals(name: str) -> None:
    # Train renders prompts through the leaf module `prompting`, the one inference uses too.
    for module in _biasjudge_imports(name):
        assert not _under(module, "biasjudge.data", "biasjudge.labels", "biasjudge.eval", "biasjudge.judge"), (
            f"{name} imports {module}"
        )


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("biasjudge.backends")])
def test_backends_never_import_judge(name: str) -> None:
    for module in _biasjudge_imports(name):
        assert not _under(module, "biasjudge.judge"), f"{name} imports {module}"


def test_prompting_is_a_leaf() -> None:
    allowed = ("biasjudge.records", "biasjudge.verdict", "biasjudge.errors")
    for module in _biasjudge_imports("biasjudge.prompts.render"):
        assert _under(module, *allowed), f"prompting imports {module}"


def _unit(module: str) -> str:
    """The package-level unit of a module: `biasjudge.judge.hybrid` -> `biasjudge.judge`."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _package_graph() -> dict[str, set[str]]:
    """unit -> units it imports (lazy imports and TYPE_CHECKING ones included; the root package excluded)."""
    units = {_unit(n) for n in MODULES if n != "biasjudge"}
    graph: dict[str, set[str]] = {u: set() for u in units}
    for name in MODULES:
        if name == "biasjudge":
            continue
        for module in _biasjudge_imports(name):
            target = _unit(module)
            if target in units and target != _unit(name):
                graph[_unit(name)].add(target)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_packages() -> None:
    cycle = _find_cycle(_package_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _module_graph() -> dict[str, set[str]]:
    """module -> modules it imports (lazy and TYPE_CHECKING imports included); `from pkg import name`
    counts as an import of `pkg.name` where that is a module, else of `pkg`."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for module in _biasjudge_imports(name):
            while module not in MODULES and "." in module:
                module = module.rsplit(".", 1)[0]
            if module in MODULES and module not in (name, "biasjudge"):
                graph[name].add(module)
    return graph


def test_no_import_cycle_between_modules() -> None:
    cycle = _find_cycle(_module_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle() -> None:
    # The check above must be able to fail.
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("biasjudge.judge")])
def test_judge_never_reaches_later_stages(name: str) -> None:
    for module in _biasjudge_imports(name):
        assert not _under(module, "biasjudge.train", "biasjudge.eval", "biasjudge.serve", "biasjudge.batch"), module


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("biasjudge.eval.report")])
def test_report_reads_logs_only(name: str) -> None:
    for module, _ in _imports(MODULES[name]):
        assert not _under(module, "biasjudge.backends", "torch"), f"{name} imports {module}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_nobody_imports_cli_serve_or_batch(name: str) -> None:
    for module in _biasjudge_imports(name):
        if name == "biasjudge" and (module == "biasjudge.serve" or _under(module, "biasjudge.serve.client")):
            continue  # `biasjudge.Client`, resolved lazily by the package's __getattr__
        for entry in ("biasjudge.cli", "biasjudge.serve", "biasjudge.batch"):
            if _under(module, entry):
                assert _under(name, entry) or _under(name, "biasjudge.cli"), f"{name} imports {module}"


# Modules on the start-up path of every command; heavy packages belong in backends and train.
LIGHT = [
    n
    for n in MODULES
    if _under(
        n,
        "biasjudge.records",
        "biasjudge.verdict",
        "biasjudge.errors",
        "biasjudge.io",
        "biasjudge.config",
        "biasjudge.prompts",
        "biasjudge.prompts.render",
        "biasjudge.backends.base",
        "biasjudge.backends.registry",
        "biasjudge.eval.metrics",
        "biasjudge.eval.report",
        "biasjudge.cli",
    )
]


@pytest.mark.parametrize("name", LIGHT)
def test_heavy_packages_are_imported_lazily(name: str) -> None:
    for module, top in _imports(MODULES[name]):
        assert not (top and module.split(".")[0] in HEAVY), f"{name} imports {module} at module level"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_path_hacks(name: str) -> None:
    text = MODULES[name].read_text()
    assert "sys.path" not in text and "spec_from_file_location" not in text, name


def test_cli_starts_without_heavy_packages() -> None:
    code = f"import sys, biasjudge.cli.main\nprint(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


WRITERS = {
    "write_output",
    "write_records",
    "write_json",
    "write_json_lines",
    "write_meta",
    "atomic_open",
    "JsonlAppender",
}


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("biasjudge.cli")])
def test_the_cli_is_thin_it_never_writes_files(name: str) -> None:
    # A command parses flags, calls one library function and prints: the writing (with sidecars,
    # atomic renames, resumable appends) lives in the library, where it is tested and reusable.
    tree = ast.parse(MODULES[name].read_text())
    called = {
        node.func.id if isinstance(node.func, ast.Name) else node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute)
    }
    assert not called & WRITERS, f"{name} writes files itself: {sorted(called & WRITERS)}"


BARE = {"ValueError", "RuntimeError", "KeyError", "TypeError", "Exception", "AssertionError"}
BARE_ALLOWED = {
    # Argument checks of small pure APIs (a programming error, not a user's input), as the stdlib does.
    ("biasjudge.verdict", "parse"),
    ("biasjudge.verdict", "render"),
    ("biasjudge.data.classify", "classify"),
    ("biasjudge.backends.base", "__init__"),  # ChoiceScores(floored=...) naming a choice it lacks
    # A lookup in a mapping-like table: KeyError is the protocol of `get`-by-key.
    ("biasjudge.labels.answer_key", "get"),
    # A pydantic AfterValidator: pydantic turns its ValueError into the record's ValidationError.
    ("biasjudge.records", "no_lone_choice"),
    # A command declared wrong (two stage configs, an option no function defaults): fails at import.
    ("biasjudge.cli.common", "option_groups"),
    ("biasjudge.cli.common", "defaults"),
}


def _bare_raises(name: str) -> list[str]:
    """`raise ValueError(...)`-style raises outside pydantic validators (which turn them into
    ValidationErrors, reported by the config and record readers with file and field)."""
    found: list[str] = []

    def visit(node: ast.AST, function: str | None, validator: bool) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            decorators = " ".join(ast.unparse(d) for d in node.decorator_list)
            validator = validator or "validator" in decorators
            function = node.name
        call = node.exc if isinstance(node, ast.Raise) else None
        bare = isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in BARE
        if bare and not validator and (name, function) not in BARE_ALLOWED:
            found.append(f"{name}:{node.lineno} raise {ast.unparse(call.func)} in {function}")  # type: ignore[union-attr]
        for child in ast.iter_child_nodes(node):
            visit(child, function, validator)

    visit(ast.parse(MODULES[name].read_text()), None, False)
    return found


@pytest.mark.parametrize("name", sorted(MODULES))
def test_what_a_user_can_cause_is_a_biasjudge_error(name: str) -> None:
    # The CLI prints a BiasJudgeError as one line; a bare ValueError would reach the user as a
    # traceback. Metrics raise MetricInputError (a BiasJudgeError and a ValueError, as sklearn's).
    assert _bare_raises(name) == []
