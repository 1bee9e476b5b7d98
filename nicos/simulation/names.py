"""Names a script uses but nothing defines: probable typos.

The dry run finds a misspelt name when it reaches the line; a branch the
dry run does not take (``if error: mvoe(...)``) would hide it.  So the
script is also checked as a whole: every name it reads must be a builtin,
something in the script namespace (devices, commands), or something the
script itself defines somewhere (assignments, loops, imports, functions,
arguments, ...).  Scopes are ignored on purpose: this errs on the side of
silence.
"""

from __future__ import annotations

import ast
import builtins
import difflib
from collections.abc import Iterable


def _defined(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
    return names


def undefined_names(tree: ast.AST, known: Iterable[str]) -> list[tuple[str, int, str]]:
    """``(name, line, suggestion)`` for each name read but never defined;
    ``suggestion`` is a close known name or ''.  One entry per name (its
    first use)."""
    own = sorted(set(known) | _defined(tree))  # devices and commands come first
    builtin = sorted(dir(builtins))
    available = set(own) | set(builtin)
    found: dict[str, tuple[str, int, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) \
                and node.id not in available:
            close = difflib.get_close_matches(node.id, own, n=1, cutoff=0.6) or \
                difflib.get_close_matches(node.id, builtin, n=1, cutoff=0.6)
            entry = (node.id, node.lineno, close[0] if close else "")
            if node.id not in found or node.lineno < found[node.id][1]:
                found[node.id] = entry
    return sorted(found.values(), key=lambda entry: entry[1])


__all__ = ["undefined_names"]
