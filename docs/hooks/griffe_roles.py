"""Griffe extension: the package's reST habits in docstrings, as Markdown.

The docstrings cross-reference with Sphinx roles, which Markdown shows as raw text. Each role
becomes a link to the object's entry in the API reference (`[x][full.path]`, resolved by
mkdocs-autorefs) when the name resolves to an object the reference renders, else inline code.
A `~` keeps only the last part of the name, as in Sphinx. A line ending in `::` (a reST literal
block marker) ends in `:`; the indented block after it is code in Markdown too. A doctest
(`>>>` lines and their output, up to a blank line) becomes a fenced `pycon` block, so its output
is shown as code rather than read as Markdown links.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj|const):`(~?)([\w.]+)`")
LITERAL = re.compile(r"::$", re.MULTILINE)


def _target(obj: griffe.Object, name: str) -> griffe.Object | None:
    """The object `name` points at from inside `obj`'s docstring, or None."""
    module = obj.module
    if name.startswith("."):  # relative: this module's members, then its package's
        candidates = [module.path + name] + ([module.parent.path + name] if module.parent else [])
    else:
        head, dot, rest = name.partition(".")
        candidates = [name, f"{module.path}.{name}"]
        with contextlib.suppress(griffe.NameResolutionError, ValueError, KeyError):
            candidates.insert(0, obj.resolve(head) + dot + rest)
    for path in candidates:
        try:
            found: griffe.Object | griffe.Alias = obj.modules_collection.get_member(path)
            while isinstance(found, griffe.Alias):
                found = found.final_target
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        return found
    return None


def _public(obj: griffe.Object) -> bool:
    return not any(part.startswith("_") for part in obj.path.split(".")) and not obj.path.startswith("biasjudge.cli")


def _rewrite(obj: griffe.Object) -> None:
    if not obj.docstring:
        return

    def replace(match: re.Match[str]) -> str:
        tilde, name = match.groups()
        shown = name.rsplit(".", 1)[-1] if tilde else name.lstrip(".")
        found = _target(obj, name)
        if found is not None and _public(found):
            return f"[`{shown}`][{found.path}]"
        return f"`{shown}`"

    text = ROLE.sub(replace, obj.docstring.value)
    obj.docstring.value = _fence_doctests(LITERAL.sub(":", text))


def _fence_doctests(text: str) -> str:
    out: list[str] = []
    fence: str | None = None  # the indentation of the open doctest fence
    in_code = False
    for line in text.split("\n"):
        stripped = line.lstrip()
        if fence is not None and not stripped:
            out += [f"{fence}```", line]
            fence = None
            continue
        if fence is None and stripped.startswith("```"):
            in_code = not in_code
        elif fence is None and not in_code and stripped.startswith(">>>"):
            fence = line[: len(line) - len(stripped)]
            out.append(f"{fence}```pycon")
        out.append(line)
    if fence is not None:
        out.append(f"{fence}```")
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles of every docstring of a loaded package (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Walk the whole package once it is loaded, so every role can be resolved."""
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            _rewrite(obj)
            stack += [m for m in obj.members.values() if isinstance(m, griffe.Object)]
