"""Script requests: text normalisation, splitting into blocks, and safety rewrites.

A multi-line script is split into its top-level statements ("blocks") so that
``update`` can replace the part that has not run yet.  A single line is
compiled in interactive mode, so an expression's value is shown like at a
Python prompt.
"""

from __future__ import annotations

import ast
import time
import uuid
from dataclasses import dataclass, field
from types import CodeType

from nicos_daemon.common import CommandError

SCRIPT_FILENAME = "<script>"
MAX_SCRIPT_CHARS = 4 * 1024 * 1024

TIME_SLEEP_REFUSED = "Please use the NICOS command 'sleep' instead of 'time.sleep'!"


class ScriptError(Exception):
    """The script cannot run as given (syntax error, forbidden call)."""


def normalize(text: str) -> str:
    """Multi-line text always ends with a newline; this is what clients see."""
    if "\n" in text and not text.endswith("\n"):
        text += "\n"
    return text


class _BareExceptRewriter(ast.NodeTransformer):
    """``except:`` would swallow the stop request (a BaseException); make it
    ``except Exception:``."""

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.ExceptHandler:
        self.generic_visit(node)
        if node.type is None:
            node.type = ast.copy_location(ast.Name(id="Exception", ctx=ast.Load()), node)
        return node


def _refuse_time_sleep(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "sleep" and \
                isinstance(node.value, ast.Name) and node.value.id == "time":
            raise ScriptError(TIME_SLEEP_REFUSED)
        if isinstance(node, ast.ImportFrom) and node.module == "time" and \
                any(alias.name == "sleep" for alias in node.names):
            raise ScriptError(TIME_SLEEP_REFUSED)


def _parse(text: str, mode: str) -> ast.AST:
    try:
        return ast.parse(text, SCRIPT_FILENAME, mode)
    except SyntaxError as err:
        raise ScriptError(_describe_syntax_error(err)) from None
    except (ValueError, MemoryError, RecursionError) as err:
        raise ScriptError(f"cannot parse script: {err}") from None


def _describe_syntax_error(err: SyntaxError) -> str:
    where = f"line {err.lineno}" if err.lineno else "unknown line"
    text = (err.text or "").rstrip("\n")
    pointer = ""
    if text and err.offset:
        pointer = "\n    " + text + "\n    " + " " * (max(err.offset, 1) - 1) + "^"
    return f"SyntaxError in script, {where}: {err.msg}{pointer}"


def compile_blocks(text: str) -> list[CodeType]:
    """Compile a script into code objects, one per top-level statement."""
    if "\n" not in text:
        tree = _parse(text, "single")
        _refuse_time_sleep(tree)
        return [compile(tree, SCRIPT_FILENAME, "single")]
    module = _parse(text, "exec")
    assert isinstance(module, ast.Module)
    _refuse_time_sleep(module)
    module = ast.fix_missing_locations(_BareExceptRewriter().visit(module))
    return [compile(ast.Module(body=[stmt], type_ignores=[]), SCRIPT_FILENAME, "exec")
            for stmt in module.body]


def block_dumps(text: str) -> list[str]:
    """Top-level statements as position-free AST dumps, to compare scripts."""
    module = _parse(text, "exec")
    assert isinstance(module, ast.Module)
    return [ast.dump(stmt, include_attributes=False) for stmt in module.body]


@dataclass
class ScriptRequest:
    """A script queued or running in the daemon."""

    name: str | None
    text: str
    user: str
    user_level: int
    reqid: str = field(default_factory=lambda: str(uuid.uuid1()))
    submitted: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if len(self.text) > MAX_SCRIPT_CHARS:
            raise CommandError(f"script too long ({len(self.text)} characters, "
                               f"limit {MAX_SCRIPT_CHARS})")
        self.text = normalize(self.text)

    @property
    def single_line(self) -> bool:
        return "\n" not in self.text

    def serialize(self) -> dict:
        """The request dict of the protocol's request/processing/done events."""
        return {"reqid": self.reqid, "name": self.name, "script": self.text, "user": self.user}
