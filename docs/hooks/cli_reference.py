"""Generate the CLI reference page at build time, with Typer's own generator.

The page is `typer --app app biasjudge.cli.main utils docs` run on the installed app, so it lists
every command and option the code has at build time: it cannot go stale, and nothing generated is
committed. The page exists only inside the build (`reference/cli.md`).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from mkdocs.structure.files import File, Files

PAGE = "reference/cli.md"
INTRO = """\
Every command of `biasjudge`, in the order `biasjudge --help` lists them. This page is generated
when the site is built, by Typer's own generator (`typer biasjudge.cli.main utils docs`), from the
installed command line: what you read here is what `--help` prints.

"""


def cli_markdown() -> str:
    """The Markdown of the CLI reference, as Typer's `utils docs` writes it, with a short intro."""
    command = [sys.executable, "-m", "typer", "--app", "app", "biasjudge.cli.main", "utils", "docs",
               "--name", "biasjudge", "--title", "CLI reference"]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    title, _, body = out.partition("\n")
    return f"{title}\n\n{INTRO}{body.lstrip()}"


def on_files(files: Files, config: Any) -> Files:
    """MkDocs hook: add the generated CLI reference to the site's files."""
    files.append(File.generated(config, PAGE, content=cli_markdown()))
    return files
