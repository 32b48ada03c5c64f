"""The API reference: one page per part of the package, generated at build time, and a check
that fails the build on a public object without a docstring.

Pages. Every module of the package but `cli` (the command line has its own generated page) gets a
`::: module` block on the page of its part (`reference/api/<part>.md`): a module goes to the part
whose folder holds it, a module elsewhere to `core` unless listed (the dataset build beside the
data stages, the recipes beside training). Inside a page, modules come in pipeline order where
`ORDER` names them, then by name. A module added to the package appears without an edit here.

Docstrings. mkdocstrings renders an undocumented function as a bare signature and says nothing.
This hook walks what the pages render: each module and, below it, the members the handler's
filter `!^_` keeps (no name starting with `_`; imported names are left to the module that defines
them). A module, class, function, method or property without a docstring is a warning, and
`mkdocs build --strict` fails on warnings.

Run as a script it prints the missing docstrings and exits 1 if there are any
(tests/test_docs.py): `python docs/hooks/api_reference.py [--src src] [--package biasjudge]`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import griffe

log = logging.getLogger("mkdocs.hooks.api_reference")

# (page, title, folder of the package it holds, top-level modules it holds too)
PARTS: list[tuple[str, str, str | None, tuple[str, ...]]] = [
    ("core", "Core: records, output contract, files, configs, prompts", None, ()),
    ("data", "Data stages and the dataset build", "data", ("dataset", "dataset.build", "dataset.stages")),
    ("labels", "Labels", "labels", ()),
    ("rows", "Training rows", None, ("dataset.rows",)),
    ("train", "Training, and the shipped judges' recipes", "train", ("recipes", "recipes.pairwise", "recipes.reader")),
    ("export", "Export", "train.export", ()),
    ("backends", "Backends", "backends", ()),
    ("judge", "Judges", "judge", ()),
    ("eval", "Evaluation", "eval", ()),
    ("batch", "Batch judging", "batch", ()),
    ("serve", "Service", "serve", ()),
]
# Pipeline order inside a page; modules not named here follow, by name.
ORDER = [
    "", "records", "verdict", "io", "io.files", "io.progress", "config", "errors", "prompts", "prompts.render",
    "data", "data.sources", "data.bbq", "data.bbq_targets", "data.candidates", "data.classify", "data.pairs",
    "data.holdout", "dataset", "dataset.stages", "dataset.build", "dataset.rows",
    "labels", "labels.answer_key", "labels.teacher", "labels.hard_negatives", "labels.synthesis",
    "labels.label_sets", "labels.agreement", "labels.flips", "labels.human", "labels.human_safety",
    "train", "train.config", "train.common", "train.sft", "train.dpo", "train.card", "recipes", "recipes.pairwise",
    "recipes.reader",
    "train.export", "train.export.tokenizer", "train.export.merge", "train.export.convert", "train.export.verify",
    "backends", "backends.base", "backends.registry", "backends.embedded", "backends.llamacpp",
    "backends.openai", "backends.hf", "backends.vllm", "backends.ledger", "backends.costs",
    "judge", "judge.judge", "judge.baselines", "judge.debiased", "judge.hybrid", "judge.calibration",
    "judge.replay", "judge.shipped",
    "eval", "eval.protocol", "eval.metrics", "eval.metrics_runs", "eval.metrics_behaviour",
    "eval.metrics_calibration", "eval.metrics_agreement", "eval.calibration", "eval.report", "eval.twins",
    "eval.robustness",
    "eval.run",
    "batch", "batch.judge_file", "batch.ray_engine",
    "serve", "serve.app", "serve.schemas", "serve.batcher", "serve.client", "serve.web",
]  # fmt: skip
SKIP = ("cli",)


def load(package: str, src: Path) -> griffe.Module:
    """The package as griffe reads it from source (no import, so no heavy library is loaded)."""
    loaded = griffe.load(package, search_paths=[str(src)], resolve_aliases=False, try_relative_path=False)
    if not isinstance(loaded, griffe.Module):
        raise TypeError(f"{package} is not a package under {src}")
    return loaded


def _modules(module: griffe.Module) -> Iterator[griffe.Module]:
    yield module
    for member in module.members.values():
        if isinstance(member, griffe.Module):
            yield from _modules(member)


def _part(relative: str) -> str:
    best, depth = "core", 0
    for page, _, folder, extra in PARTS:
        if relative in extra:
            return page
        if folder and (relative == folder or relative.startswith(folder + ".")) and folder.count(".") + 1 > depth:
            best, depth = page, folder.count(".") + 1
    return best


def pages(root: griffe.Module) -> dict[str, list[str]]:
    """Page name -> the module paths it renders, in order (every part, even an empty one)."""
    placed: dict[str, list[str]] = {page: [] for page, *_ in PARTS}
    for module in _modules(root):
        relative = module.path.removeprefix(root.path).removeprefix(".")
        if relative.split(".")[0] in SKIP or any(part.startswith("_") for part in relative.split(".") if part):
            continue
        placed[_part(relative)].append(relative)
    rank = {name: i for i, name in enumerate(ORDER)}
    for names in placed.values():
        names.sort(key=lambda name: (rank.get(name, len(rank)), name))
    return {page: [f"{root.path}.{n}" if n else root.path for n in names] for page, names in placed.items()}


def _block(module: griffe.Module) -> str:
    """The `:::` block of one module. A module that re-exports names (`__all__`) renders only
    what it defines: the re-exported objects are rendered once, in the module that defines them."""
    exported = {str(name) for name in module.exports or ()}
    if not any(member.is_alias and name in exported for name, member in module.members.items()):
        return f"::: {module.path}"
    own = [n for n, m in module.members.items() if not m.is_alias and not m.is_module and not n.startswith("_")]
    members = "[" + ", ".join(own) + "]" if own else "false"
    return f"::: {module.path}\n    options:\n      members: {members}"


def page_markdown(title: str, modules: list[griffe.Module]) -> str:
    """One API page: a title, then a `:::` block per module (rendered by mkdocstrings)."""
    blocks = "\n\n".join(_block(module) for module in modules)
    return f"# {title}\n\nGenerated from the docstrings of the source.\n\n{blocks}\n"


def _needs_docstring(obj: griffe.Object) -> bool:
    return obj.is_module or obj.is_class or obj.is_function or "property" in obj.labels


def _walk(obj: griffe.Object) -> Iterator[str]:
    if _needs_docstring(obj) and not (obj.docstring and obj.docstring.value.strip()):
        yield obj.path
    if obj.is_function or obj.is_attribute:
        return
    for name, member in obj.members.items():
        if name.startswith("_") or not isinstance(member, griffe.Object):
            continue  # private, or an imported name (documented where it is defined)
        if obj.is_module and member.is_module:
            continue  # a submodule is a block of its own
        yield from _walk(member)


def missing_docstrings(root: griffe.Module) -> list[str]:
    """Paths of the public modules, classes, functions, methods and properties the API pages
    render that have no docstring, in page order."""
    collection = root.modules_collection
    return [path for modules in pages(root).values() for module in modules for path in _walk(collection[module])]


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the API pages to the build, and warn once per missing docstring."""
    from mkdocs.structure.files import File

    root = load("biasjudge", Path(config["config_file_path"]).parent / "src")
    titles = {page: title for page, title, *_ in PARTS}
    for page, modules in pages(root).items():
        content = page_markdown(titles[page], [root.modules_collection[module] for module in modules])
        files.append(File.generated(config, f"reference/api/{page}.md", content=content))
    for path in missing_docstrings(root):
        log.warning("no docstring: %s (public, in the API reference)", path)
    return files


def main(argv: list[str] | None = None) -> int:
    """Print each public object of the API pages that has no docstring; exit 1 if any."""
    parser = argparse.ArgumentParser(description="List public objects of the API reference without a docstring.")
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[2] / "src", help="Source folder.")
    parser.add_argument("--package", default="biasjudge", help="Top-level package.")
    args = parser.parse_args(argv)
    missing = missing_docstrings(load(args.package, args.src))
    for path in missing:
        print(f"no docstring: {path}")
    print(f"{len(missing)} public objects without a docstring")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
