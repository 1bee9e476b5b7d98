"""User commands: plain functions marked for export to the script namespace.

A command is written as ``def maw(session, *args)``: it gets the session it
works in as its first argument, so no global "current session" is needed.
``@usercommand`` marks it; the session binds every marked function of its
command modules to itself and puts the bound versions, which users call as
``maw(mono, 2.5)``, into the script namespace.  The bound version keeps the
name, the docstring and the signature (without ``session``) for ``help``.

When a call does not fit the signature, the user gets a sentence instead of
Python's TypeError: ``maw() needs a device and a target, e.g. maw(mono, 2.5)``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from nicos.core.errors import UsageError

if TYPE_CHECKING:
    from nicos.core.session import Session

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__usercommand__"


@dataclass(frozen=True)
class CommandInfo:
    """How a command is presented: its name, what it needs, an example call."""

    name: str
    needs: str | None = None
    example: str | None = None

    def usage_error(self, problem: str | None = None) -> UsageError:
        """The message for a call that does not fit."""
        if problem is None:
            problem = f"needs {self.needs}" if self.needs else "was called the wrong way"
        text = f"{self.name}() {problem}"
        if self.example:
            text += f", e.g. {self.example}"
        return UsageError(text)


def usercommand(func: F | None = None, *, name: str | None = None, needs: str | None = None,
                example: str | None = None) -> Any:
    """Mark ``func(session, ...)`` as a user command.

    ``needs``: what the arguments are, in words ("a device and a target");
    ``example``: a typical call ("maw(mono, 2.5)").  Both appear in the
    message for a wrong call and in ``help``.
    """
    def mark(f: F) -> F:
        setattr(f, _MARK, CommandInfo(name or f.__name__, needs, example))
        return f

    return mark(func) if func is not None else mark


def command_info(obj: Any) -> CommandInfo | None:
    """The CommandInfo of a command (bound or not), or None."""
    return getattr(inspect.unwrap(obj), _MARK, None) if callable(obj) else None


def commands_in(module: ModuleType) -> dict[str, Callable[..., Any]]:
    """The marked functions defined in ``module``, by command name."""
    found = {}
    for value in vars(module).values():
        info = getattr(value, _MARK, None)
        if isinstance(info, CommandInfo) and getattr(value, "__module__", None) == \
                module.__name__:
            found[info.name] = value
    return found


def bind_command(func: Callable[..., Any], session: Session) -> Callable[..., Any]:
    """The command as users call it: ``session`` filled in, arguments checked."""
    info: CommandInfo = getattr(func, _MARK)
    signature = inspect.signature(func)
    user_signature = signature.replace(parameters=list(signature.parameters.values())[1:])

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        try:
            signature.bind(session, *args, **kwargs)
        except TypeError as err:
            raise info.usage_error(_wrong_call(info, err)) from None
        return func(session, *args, **kwargs)

    command.__signature__ = user_signature  # type: ignore[attr-defined]
    command.__name__ = info.name
    command.__qualname__ = info.name
    return command


def _wrong_call(info: CommandInfo, err: TypeError) -> str | None:
    text = str(err)
    if "unexpected keyword argument" in text:
        keyword = text.rpartition(" ")[2].strip("'")
        return f"has no option '{keyword}'"
    if info.needs:
        return None  # "needs ..." says it best
    if "too many positional" in text:
        return "got too many arguments"
    if "missing" in text:
        return "is missing " + text.partition("missing ")[2].replace(
            "required positional argument", "argument")
    return None


__all__ = ["CommandInfo", "bind_command", "command_info", "commands_in", "usercommand"]
