"""The documentation site's own checks (the site itself is built by `make docs`, `--strict`).

- Every `biasjudge ...` command in a code block of `docs/` parses against the real command line:
  the command exists, every option exists, every value has the right type and choice, and the
  required options are there. The code is never run.
- The docstring check of the API reference (`docs/hooks/api_reference.py`) names a public object
  without a docstring, and the package has none.
- Every measured-results file a page cites as a source exists.
- The README is a landing page: at most 12 KB, naming the two commands of a fresh machine, and its
  links into the docs lead to pages that exist (the rest of what it said lives in `docs/`).
- The module graph (`docs/hooks/module_graph.py`) lists every module of the package.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import typer.main

from biasjudge.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
CHECKER = DOCS / "hooks" / "api_reference.py"
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL_ENDS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1"}


def _logical_lines(block: str) -> list[str]:
    """The block's lines, with backslash continuations joined."""
    return block.replace("\\\n", " ").splitlines()


def _biasjudge_args(line: str) -> list[str] | None:
    """The arguments of a `biasjudge` call on a shell line (after `$ ` or `--`), else None."""
    try:
        tokens = shlex.split(line.strip().removeprefix("$ "))
    except ValueError:
        return None
    for i, token in enumerate(tokens):
        if token == "biasjudge" and (i == 0 or tokens[i - 1] == "--"):
            args: list[str] = []
            for arg in tokens[i + 1 :]:
                if arg.startswith("#") or arg in SHELL_ENDS:
                    break
                args.append(arg)
            return args
    return None


def _doc_commands() -> list[tuple[str, list[str]]]:
    """Every `biasjudge` command in a code block of the docs pages and of the README."""
    found = []
    for page in [*sorted(DOCS.rglob("*.md")), README]:
        where = page.relative_to(DOCS) if page.is_relative_to(DOCS) else page.relative_to(ROOT)
        for block in FENCE.findall(page.read_text(encoding="utf-8")):
            for line in _logical_lines(block):
                args = _biasjudge_args(line)
                if args is not None:
                    found.append((f"{where}: biasjudge {shlex.join(args)}", args))
    return found


COMMANDS = _doc_commands()
CLI = typer.main.get_command(app)


def _parse(args: list[str]) -> None:
    """Parse `biasjudge ARGS` down to its command, as the CLI would before running it."""
    command, ctx, name = CLI, None, "biasjudge"
    while True:
        ctx = command.make_context(name, list(args), parent=ctx)
        get = getattr(command, "get_command", None)
        if get is None:
            return
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            return
        sub = get(ctx, rest[0])
        if sub is None:
            raise LookupError(f"no command {rest[0]!r} under {name!r}")
        command, name, args = sub, rest[0], rest[1:]


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) >= 40, [c for c, _ in COMMANDS]


@pytest.mark.parametrize("args", [a for _, a in COMMANDS], ids=[c for c, _ in COMMANDS])
def test_every_command_in_the_docs_parses(args: list[str]) -> None:
    try:
        _parse(args)
    except Exception as exc:
        if type(exc).__name__ == "Exit":  # --help, --version
            return
        pytest.fail(f"biasjudge {shlex.join(args)}: {type(exc).__name__}: {exc}")


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["data", "splitt", "--pairs", "p.jsonl"], "no command"),
        (["eval", "--out", "runs/x", "--limt", "3"], "No such option"),
        (["eval", "--out", "runs/x", "--limit", "N"], "integer"),
        (["judge", "--mode", "scor"], "not one of"),
        (["eval"], "Missing"),
    ],
)
def test_a_broken_command_is_caught(args: list[str], why: str) -> None:
    with pytest.raises(Exception, match=why):
        _parse(args)


def test_commands_are_read_from_shell_lines() -> None:
    line = 'ray job submit -- biasjudge judge-file a.jsonl b.jsonl --judge "openai:http://h/v1#m" | tee log  # note'
    assert _biasjudge_args(line) == ["judge-file", "a.jsonl", "b.jsonl", "--judge", "openai:http://h/v1#m"]
    assert _biasjudge_args("cat runs/data/sft.jsonl > x.jsonl") is None


def _check(src: Path, package: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(CHECKER), "--src", str(src), "--package", package]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)


def test_the_docstring_check_names_what_has_no_docstring(tmp_path: Path) -> None:
    package = tmp_path / "toy"
    (package / "_private").mkdir(parents=True)
    (package / "__init__.py").write_text('"""A toy package."""\n')
    (package / "_private" / "__init__.py").write_text("def hidden():\n    pass\n")
    (package / "stage.py").write_text(
        '"""A stage."""\n\nfrom os.path import join\n\n\n'
        'def documented():\n    """Says what it does."""\n\n\n'
        "def bare():\n    pass\n\n\n"
        "def _helper():\n    pass\n\n\n"
        'class Thing:\n    """A thing."""\n\n'
        "    def __init__(self):\n        pass\n\n"
        "    def method(self):\n        pass\n\n"
        "    @property\n    def size(self):\n        return 1\n"
    )
    (package / "empty.py").write_text("X = 1\n")
    out = _check(tmp_path, "toy")
    assert out.returncode == 1, out.stdout + out.stderr
    named = {line.removeprefix("no docstring: ") for line in out.stdout.splitlines() if line.startswith("no docstring")}
    assert named == {"toy.stage.bare", "toy.stage.Thing.method", "toy.stage.Thing.size", "toy.empty"}


def test_every_public_object_of_the_api_reference_has_a_docstring() -> None:
    out = _check(ROOT / "src", "biasjudge")
    assert out.returncode == 0, out.stdout + out.stderr


CITED = re.compile(r"`((?:\.\./shared/|bench/results/|src/biasjudge/|configs/)[\w./-]+|README\.md)`")


def test_every_cited_source_exists() -> None:
    cited = {m for page in DOCS.rglob("*.md") for m in CITED.findall(page.read_text(encoding="utf-8"))}
    assert "bench/results/judge_speed.json" in cited, sorted(cited)
    missing = sorted(path for path in cited if not (ROOT / path).exists())
    assert not missing, missing


README_LIMIT = 12 * 1024


def test_the_readme_is_a_landing_page() -> None:
    # The README says what biasjudge is, the two commands of a fresh machine, the default judge's
    # table and the common uses; everything else it said is in docs/ (Measured here, Layout, ...).
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes, over {README_LIMIT}: move sections into docs/"
    text = README.read_text(encoding="utf-8")
    assert "make quickstart" in text
    assert "make test" in text


MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_readme_links_into_the_docs() -> None:
    # mkdocs checks the links between docs pages; nothing else checks the README's.
    links = [link for link in MD_LINK.findall(README.read_text(encoding="utf-8")) if "://" not in link]
    assert sum(link.startswith("docs/") for link in links) >= 5, links
    missing = sorted(link for link in links if not (ROOT / link.partition("#")[0]).exists())
    assert not missing, missing


def _module_graph() -> ModuleType:
    """docs/hooks/module_graph.py, loaded by path (docs/hooks is not a package)."""
    spec = importlib.util.spec_from_file_location("module_graph", DOCS / "hooks" / "module_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_the_module_graph_lists_every_module() -> None:
    graph = _module_graph()
    page = graph.page_markdown(ROOT / "src")
    package = ROOT / "src" / "biasjudge"
    modules = set()
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    listed = set(re.findall(r"^\| `(biasjudge[\w.]*)` \|", page, re.MULTILINE))
    assert modules <= listed, sorted(modules - listed)
    assert "```mermaid" in page


def test_the_module_graph_keeps_pipeline_order_and_places_unlisted_modules(tmp_path: Path) -> None:
    graph = _module_graph()
    package = tmp_path / "biasjudge"
    for name, source in {
        "__init__.py": "",
        "records.py": "",
        "verdict.py": "from biasjudge.records import Verdict\n",
        "cli/__init__.py": "",
        "cli/main.py": "def main():\n    from biasjudge.judge import make_judge\n",
        "judge/__init__.py": "from .judge import make_judge\n",
        "judge/judge.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from biasjudge import records\n",
        "judge/zeta.py": "import biasjudge.verdict\n",
        "newpkg/__init__.py": "",
        "newpkg/thing.py": "from ..records import X\n",
    }.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(source)
    modules = graph.collect(tmp_path)
    assert modules["verdict"].imports == {"records": "top"}
    assert modules["cli.main"].imports == {"judge": "function"}
    assert modules["judge"].imports == {"judge.judge": "top"}
    assert modules["judge.judge"].imports == {"records": "types"}
    assert modules["judge.zeta"].imports == {"verdict": "top"}
    assert modules["newpkg.thing"].imports == {"records": "top"}
    page = graph.page_markdown(tmp_path)
    rows = re.findall(r"^\| `(biasjudge[\w.]*)` \| [^|]+ \|$", page.partition("## Modules")[2], re.MULTILINE)
    # Pipeline order from the hook's list; a module it does not name ends its package, a package it
    # does not name ends the page.
    assert rows == [
        "biasjudge.records", "biasjudge.verdict", "biasjudge.judge", "biasjudge.judge.judge", "biasjudge.judge.zeta",
        "biasjudge.cli", "biasjudge.cli.main", "biasjudge", "biasjudge.newpkg", "biasjudge.newpkg.thing",
    ]  # fmt: skip
