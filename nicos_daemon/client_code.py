"""Code clients run in the script namespace: exec, eval, watch expressions
and name completion.

It runs in the client's thread (exec, eval, complete) or the sampler thread
(watch expressions), never in the script thread.
"""

from __future__ import annotations

import functools
import rlcompleter
import threading
from collections.abc import Callable
from types import CodeType
from typing import Any

from nicos.protocols.daemon import ERROR
from nicos.protocols.daemon.codec import CodecError, to_wire
from nicos_daemon.common import CommandError
from nicos_daemon.messages import captured, format_script_exception
from nicos_daemon.scripts import ScriptError, compile_blocks

MAX_WATCHES = 200
MAX_COMPLETIONS = 500

# eval and watch expressions come back again and again (a GUI asks for the same
# values every second); compiling costs more than evaluating most of them
_CACHED_EXPRESSION_CHARS = 1000


@functools.lru_cache(maxsize=512)
def _compiled(expr: str) -> CodeType:
    return compile(expr, "<eval>", "eval")


def compile_expression(expr: str) -> CodeType:
    """``compile(expr, "<eval>", "eval")``, cached for short expressions."""
    if len(expr) <= _CACHED_EXPRESSION_CHARS:
        return _compiled(expr)
    return compile(expr, "<eval>", "eval")


def execute(code: str, namespace: dict[str, Any],
            message: Callable[[str, int, str | None], None]) -> None:
    """Run ``code`` in ``namespace``; its output, syntax errors and
    exceptions go to ``message(text, level, exc_text)``."""
    try:
        blocks = compile_blocks(code)
    except ScriptError as err:
        message(str(err), ERROR, None)
        return
    with captured():
        try:
            for block in blocks:
                exec(block, namespace)
        except Exception as err:  # noqa: BLE001 - reported to the user
            summary, trace = format_script_exception(err)
            message(summary, ERROR, trace)


def evaluate(expr: str, namespace: dict[str, Any], stringify: bool) -> Any:
    """The value of ``expr`` as the protocol's eval sends it: its repr with
    ``stringify`` (errors included), else a wire value."""
    try:
        with captured():
            value = eval(compile_expression(expr), namespace)
        if stringify:
            return repr(value)
    except Exception as err:  # noqa: BLE001 - reported to the client
        if stringify:
            return f"<cannot be evaluated: {err}>"
        raise CommandError(f"exception raised while evaluating: {err}") from None
    try:
        return to_wire(value)
    except CodecError as err:
        raise CommandError(f"result cannot be sent: {err}") from None


def completions(namespace: dict[str, Any], lastword: str) -> list[str]:
    """Completions of ``lastword`` from ``namespace``, sorted."""
    completer = rlcompleter.Completer(namespace)
    found: set[str] = set()
    for state in range(MAX_COMPLETIONS):
        try:
            candidate = completer.complete(lastword, state)
        except Exception:  # noqa: BLE001 - attribute lookups may fail
            break
        if candidate is None:
            break
        found.add(candidate)
    return sorted(found)


def _key(expr: str) -> str:
    return expr if ":" in expr else expr + ":default"


class WatchExpressions:
    """Watch expressions, keyed ``expr:group``, and their last values (None
    until first evaluated); changes go out as ``watch`` events through
    ``emit``."""

    def __init__(self, emit: Callable[[str, Any], None]) -> None:
        self._emit = emit
        self._lock = threading.Lock()
        self._values: dict[str, str | None] = {}

    def values(self) -> dict[str, str]:
        """The evaluated expressions and their values."""
        with self._lock:
            return self._evaluated()

    def _evaluated(self) -> dict[str, str]:
        return {k: v for k, v in self._values.items() if v is not None}

    def add(self, exprs: list[str]) -> None:
        """Add expressions (``expr`` or ``expr:group``)."""
        with self._lock:
            for expr in exprs:
                key = _key(expr)
                if key not in self._values and len(self._values) >= MAX_WATCHES:
                    raise CommandError(f"too many watch expressions (limit {MAX_WATCHES})")
                self._values.setdefault(key, None)

    def remove(self, exprs: list[str]) -> None:
        """Remove expressions; ``*:group`` removes a whole group."""
        with self._lock:
            for expr in exprs:
                key = _key(expr)
                if key.startswith("*:"):
                    group = key[2:]
                    for existing in [k for k in self._values if k.rpartition(":")[2] == group]:
                        del self._values[existing]
                else:
                    self._values.pop(key, None)
            values = self._evaluated()
        self._emit("watch", values)

    def evaluate(self, namespace: dict[str, Any]) -> None:
        """Evaluate every expression in ``namespace``; send the values when
        one changed."""
        with self._lock:
            keys = list(self._values)
        if not keys:
            return
        results = {}
        for key in keys:
            expr = key.rpartition(":")[0]
            try:
                results[key] = repr(eval(compile_expression(expr), namespace))
            except Exception as err:  # noqa: BLE001 - shown as the value
                results[key] = f"<cannot be evaluated: {err}>"
        with self._lock:
            changed = False
            for key, value in results.items():
                if key in self._values and self._values[key] != value:
                    self._values[key] = value
                    changed = True
            snapshot = self._evaluated()
        if changed:
            self._emit("watch", snapshot)
