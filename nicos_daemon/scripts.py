"""Script requests: text normalisation, splitting into blocks, and safety rewrites.

A multi-line script is split into its top-level statements ("blocks") so that
``update`` can replace the part that has not run yet (ScriptBlocks).  A single
line is compiled in interactive mode, so an expression's value is shown like at
a Python prompt.
"""

from __future__ import annotations

import ast
import linecache
import threading
import time
import uuid
from collections.abc import Callable
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


def _register_source(text: str) -> None:
    # tracebacks and stack traces show the user's lines
    lines = text.splitlines(keepends=True)
    linecache.cache[SCRIPT_FILENAME] = (len(text), None, lines, SCRIPT_FILENAME)


class ScriptBlocks:
    """The compiled blocks of the running script: the script thread takes
    them one by one, ``replace_unstarted`` swaps those not started yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocks: list[CodeType] = []
        self._next = 0

    def load(self, text: str) -> None:
        """Compile the script ``text`` (ScriptError when it cannot run) and
        run it from its first block."""
        blocks = compile_blocks(text)
        _register_source(text)
        with self._lock:
            self._blocks = blocks
            self._next = 0

    def take_next(self) -> CodeType | None:
        """The next block to run, None after the last."""
        with self._lock:
            if self._next >= len(self._blocks):
                return None
            code = self._blocks[self._next]
            self._next += 1
            return code

    def replace_unstarted(self, request: ScriptRequest, text: str, user: str,
                          record: Callable[[], None]) -> None:
        """Run the rest of ``request`` from ``text``, which must agree with
        its text in the blocks started already.  The request gets the new
        text and user, and ``record()`` is called, before the next block
        can start."""
        if request.single_line:
            raise CommandError("cannot update single-line script")
        if "\n" not in text:
            raise CommandError("cannot replace a multi-line script by a single line")
        try:
            new_blocks = compile_blocks(text)
            new_dumps = block_dumps(text)
            old_dumps = block_dumps(request.text)
        except ScriptError as err:
            raise CommandError(str(err)) from None
        with self._lock:
            started = self._next
            if len(new_dumps) < started:
                raise CommandError("new script too short")
            if new_dumps[:started] != old_dumps[:started]:
                raise CommandError("new script differs in already executed part of the code")
            self._blocks = new_blocks
            request.text = text
            request.user = user
            record()
        _register_source(text)
