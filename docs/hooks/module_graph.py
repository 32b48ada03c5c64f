"""Generate the module graph page at build time: which biasjudge module imports which.

The page (`reference/modules.md`) is read from the source with `ast`, nothing imported: every
module under `src/biasjudge` and each of its imports of another biasjudge module, at the top of the
file or inside a function (a lazy import, for a heavy library or to keep the CLI fast) or under
`if TYPE_CHECKING:` (types only). It shows

- a graph of the packages (a `mermaid` block, which the site draws) and the same edges as a table,
- then, package by package, each module and what it imports from biasjudge.

Packages and modules come in pipeline order, from `ORDER` below: the leaves (records, verdict,
errors, io, config), the prompts, the backends, the data stages (bbq -> candidates -> classify ->
pairs -> holdout), labels, rows, train, judge, eval, batch, serve, cli. A module `ORDER` does not
name still appears, after the named ones of its package; a package it does not name comes at the
end. So a module added to the package appears without an edit here, and the page cannot go stale.

Run as a script it prints the page: `python docs/hooks/module_graph.py [--src src]`.
"""

from __future__ import annotations

import argparse
import ast
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.module_graph")

PAGE = "reference/modules.md"
PACKAGE = "biasjudge"
# Pipeline order, module paths relative to the package ("" is the package's own __init__).
# A package is ranked by the first of its modules named here.
ORDER = [
    "records", "verdict", "errors", "io", "io.files", "io.progress", "config",
    "prompts", "prompts.render",
    "backends", "backends.base", "backends.registry", "backends.embedded", "backends.llamacpp_build",
    "backends.llamacpp", "backends.hf", "backends.openai", "backends.vllm", "backends.ledger", "backends.costs",
    "data", "data.sources", "data.bbq", "data.bbq_targets", "data.candidates", "data.classify", "data.pairs",
    "data.holdout", "data.statements",
    "labels", "labels.answer_key", "labels.teacher", "labels.hard_negatives", "labels.synthesis",
    "labels.label_sets", "labels.agreement", "labels.flips", "labels.human_safety", "labels.human",
    "dataset", "dataset.rows", "dataset.stages", "dataset.build",
    "train", "train.config", "train.common", "train.sft", "train.dpo", "train.card",
    "train.export", "train.export.tokenizer", "train.export.merge", "train.export.convert",
    "train.export.verify", "train.export.push",
    "judge", "judge.protocol", "judge.judge", "judge.registry", "judge.baselines", "judge.debiased",
    "judge.hybrid", "judge.calibration", "judge.replay", "judge.shipped", "judge.router",
    "judge.reading.entities", "judge.reading.analysis", "judge.reading.responses", "judge.reading.decide",
    "judge.reading.explain", "judge.reading.judge", "judge.freetext",
    "eval", "eval.protocol", "eval.metrics", "eval.metrics_runs", "eval.metrics_behaviour",
    "eval.metrics_calibration", "eval.metrics_agreement", "eval.calibration", "eval.report", "eval.twins",
    "eval.robustness",
    "eval.run",
    "recipes", "recipes.reader", "recipes.pairwise",
    "batch", "batch.judge_file", "batch.ray_engine",
    "serve", "serve.schemas", "serve.batcher", "serve.app", "serve.client", "serve.web",
    "cli", "cli.common", "cli.data", "cli.train", "cli.export", "cli.judge", "cli.route", "cli.eval",
    "cli.robustness", "cli.batch", "cli.serve", "cli.llama", "cli.main",
    "",
]  # fmt: skip
LEAVES = ("records", "verdict", "errors", "io", "config")
"""The packages nearly every other one imports: drawn apart in the graph (the tables list every edge)."""
KINDS = {"top": "", "function": " *(in a function)*", "types": " *(types only)*"}
"""How an import is marked: at the top of the module, only inside functions, only for type checking."""
INTRO = """\
What each module of `biasjudge` imports from `biasjudge`, read from the source with `ast` when the
site is built (nothing is imported, so the page always matches the code). Packages and modules come
in pipeline order: records, the output contract, errors, files and configs first, then prompts,
backends, the data stages, labels, the dataset build and its rows, training, judges, evaluation,
the recipes, batch judging, the service and the command line. A top-level module (`records`,
`verdict`, `errors`, `config`) counts as a package of its own; `biasjudge` is the package's own
`__init__`.

An import *(in a function)* runs only when that function is called (a heavy library stays out of
`biasjudge --help`, or a later stage is reached only when needed); one *(types only)* sits under
`if TYPE_CHECKING:` and never runs. The rules these edges keep are in `shared/ARCHITECTURE.md`,
held by `tests/test_architecture.py`; see [Layout (for contributors)](../contributing.md).
"""


@dataclass
class Module:
    """One module of the package and what it imports from the package."""

    name: str
    """Path relative to the package: `data.bbq`; "" for the package's `__init__`."""
    path: Path
    """Its source file."""
    imports: dict[str, str] = field(default_factory=dict)
    """Imported module (relative name) -> how: "top", "function" or "types"."""

    @property
    def package(self) -> str:
        """The package it belongs to: the first part of its name ("" for the root `__init__`)."""
        return self.name.split(".")[0]


def _name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _import_nodes(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement of a module, with where it sits: "top", "function" or "types"."""
    found: list[tuple[ast.Import | ast.ImportFrom, str]] = []

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, kind))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, "types" if kind == "types" else "function")
            elif isinstance(child, ast.If) and _type_checking(child):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), "types")
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), kind)
            else:
                visit(child, kind)

    visit(tree, "top")
    return found


def _targets(node: ast.Import | ast.ImportFrom, module: Module, known: set[str]) -> list[str]:
    """The biasjudge modules (relative names) one import statement reaches."""
    if isinstance(node, ast.Import):
        absolute = [alias.name for alias in node.names]
    else:
        if node.level:
            base = [PACKAGE, *module.name.split(".")] if module.name else [PACKAGE]
            if module.path.name != "__init__.py":
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            source = ".".join([*base, node.module] if node.module else base)
        else:
            source = node.module or ""
        # `from biasjudge.data import bbq` reaches the module biasjudge.data.bbq, and
        # `from biasjudge.judge import make_judge` a name of the package biasjudge.judge.
        absolute = [f"{source}.{alias.name}" for alias in node.names]
    reached = []
    for name in absolute:
        if name != PACKAGE and not name.startswith(PACKAGE + "."):
            continue
        relative = name.removeprefix(PACKAGE).removeprefix(".")
        while relative and relative not in known:  # an imported name: the module that holds it
            relative = relative.rpartition(".")[0]
        if relative in known and relative not in reached:
            reached.append(relative)
    return reached


_RANK = {"top": 0, "function": 1, "types": 2}


def collect(src: Path, package: str = PACKAGE) -> dict[str, Module]:
    """Every module under `src/<package>` (relative name -> Module), with its biasjudge imports."""
    root = src / package
    modules = {_name(p, root): Module(_name(p, root), p) for p in sorted(root.rglob("*.py"))}
    known = set(modules)
    for module in modules.values():
        try:
            tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
        except SyntaxError as exc:
            log.warning("module graph: cannot parse %s: %s", module.path, exc)
            continue
        for node, kind in _import_nodes(tree):
            for target in _targets(node, module, known):
                if target == module.name:
                    continue
                current = module.imports.get(target)
                if current is None or _RANK[kind] < _RANK[current]:
                    module.imports[target] = kind
    return modules


def _order(names: list[str]) -> list[str]:
    """Names in pipeline order: by their package's rank, then their own; unnamed ones last."""
    rank = {name: i for i, name in enumerate(ORDER)}
    package_rank: dict[str, int] = {}
    for name in ORDER:
        package_rank.setdefault(name.split(".")[0], rank[name])
    end = len(ORDER)

    def key(name: str) -> tuple[int, int, str]:
        return (package_rank.get(name.split(".")[0], end), rank.get(name, end), name)

    return sorted(names, key=key)


def _label(name: str) -> str:
    return f"{PACKAGE}.{name}" if name else PACKAGE


def package_edges(modules: dict[str, Module]) -> dict[str, dict[str, str]]:
    """Package -> the other packages it imports from, each with its strongest kind of import."""
    edges: dict[str, dict[str, str]] = {}
    for module in modules.values():
        mine = edges.setdefault(module.package, {})
        for target, kind in module.imports.items():
            other = target.split(".")[0]
            if other == module.package:
                continue
            if other not in mine or _RANK[kind] < _RANK[mine[other]]:
                mine[other] = kind
    return edges


def _node(package: str) -> str:
    return f"p_{package}" if package else "p_root"


def mermaid(modules: dict[str, Module]) -> str:
    """The package graph as a Mermaid flowchart: a solid arrow for a top-level import, a dotted
    one for an import only inside functions or only for types. The leaves (`LEAVES`) sit in a box
    of their own, and the arrows from other packages into them are left out (nearly every package
    has them; the table below lists them), so the arrows that show the pipeline stay readable."""
    edges = package_edges(modules)
    packages = _order(list(edges))
    lines = ["```mermaid", "flowchart TD", '    subgraph leaves["leaves: imported from everywhere"]']
    lines += [f'        {_node(p)}["{_label(p)}"]' for p in packages if p in LEAVES]
    lines.append("    end")
    lines += [f'    {_node(p)}["{_label(p)}"]' for p in packages if p not in LEAVES]
    for package in packages:
        for target in _order(list(edges[package])):
            if target in LEAVES and package not in LEAVES:
                continue
            arrow = "-->" if edges[package][target] == "top" else "-.->"
            lines.append(f"    {_node(package)} {arrow} {_node(target)}")
    lines.append("```")
    return "\n".join(lines)


def _code(name: str) -> str:
    return f"`{_label(name)}`"


def page_markdown(src: Path) -> str:
    """The Markdown of the module graph page for the package under `src`."""
    modules = collect(src)
    edges = package_edges(modules)
    packages = _order(list(edges))
    out = ["# Module graph", "", INTRO, "## Packages", "", mermaid(modules), ""]
    out += ["| package | modules | imports from |", "|---|---:|---|"]
    for package in packages:
        count = sum(1 for m in modules.values() if m.package == package)
        targets = ", ".join(_code(t) + KINDS[edges[package][t]] for t in _order(list(edges[package]))) or "—"
        out.append(f"| {_code(package)} | {count} | {targets} |")
    out += ["", "## Modules", ""]
    for package in packages:
        out += [f"### {_label(package)}", "", "| module | imports from biasjudge |", "|---|---|"]
        for name in _order([m for m in modules if modules[m].package == package]):
            imports = modules[name].imports
            targets = ", ".join(_code(t) + KINDS[imports[t]] for t in _order(list(imports))) or "—"
            out.append(f"| {_code(name)} | {targets} |")
        out.append("")
    return "\n".join(out)


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated module graph page to the site's files."""
    from mkdocs.structure.files import File

    src = Path(config["config_file_path"]).parent / "src"
    files.append(File.generated(config, PAGE, content=page_markdown(src)))
    return files


def main(argv: list[str] | None = None) -> int:
    """Print the module graph page."""
    parser = argparse.ArgumentParser(description="Print the module graph page of the package.")
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[2] / "src", help="Source folder.")
    args = parser.parse_args(argv)
    print(page_markdown(args.src))
    return 0


if __name__ == "__main__":
    sys.exit(main())
