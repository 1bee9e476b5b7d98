"""Basic user commands: sleep, messages, help and the list of commands."""

from __future__ import annotations

import inspect
import logging
import pydoc
from typing import Any

from nicos.commands.arguments import info_of, number_argument
from nicos.core import Device, Readable, Session, usercommand
from nicos.core.usercommand import command_info

user_log = logging.getLogger("nicos")

_NOTHING = object()


@usercommand(needs="a time in seconds", example="sleep(10)")
def sleep(session: Session, seconds: Any) -> None:
    """Wait ``seconds``; a break or stop request interrupts at once."""
    session.hooks.sleep(number_argument(info_of(sleep), seconds, "a time in seconds"))


def _text(msgs: tuple[Any, ...]) -> str:
    return " ".join(str(m) for m in msgs)


@usercommand(example="printinfo('aligned, starting scans')")
def printinfo(session: Session, *msgs: Any) -> None:
    """Log a message for everyone watching the instrument."""
    user_log.info("%s", _text(msgs))


@usercommand(example="printwarning('sample may have moved')")
def printwarning(session: Session, *msgs: Any) -> None:
    """Log a warning."""
    user_log.warning("%s", _text(msgs))


@usercommand(example="printerror('no beam')")
def printerror(session: Session, *msgs: Any) -> None:
    """Log an error message (the script goes on)."""
    user_log.error("%s", _text(msgs))


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.splitlines()[0] if doc else ""


def _signature(obj: Any) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def command_lines(session: Session) -> list[str]:
    """One line per exported command: ``name(signature)  what it does``."""
    width = max((len(name) for name in session.commands), default=0)
    return [f"{name:<{width}}  {_first_line(cmd)}" for name, cmd in sorted(
        session.commands.items(), key=lambda item: item[0].lower())]


@usercommand
def ListCommands(session: Session) -> None:
    """List the available commands with a short description."""
    user_log.info("Available commands:\n%s", "\n".join(command_lines(session)))


def _device_help(device: Device) -> str:
    lines = [f"{device.name}: {device.description or type(device).__name__} "
             f"({type(device).__module__}.{type(device).__name__})"]
    if isinstance(device, Readable):
        try:
            lines.append(f"value: {device.format(device.read(), unit=True)}")
        except Exception as err:  # noqa: BLE001 - help must show the rest anyway
            lines.append(f"value: cannot be read ({err})")
    lines.append("parameters:")
    for name, value, unit, description in device.parameter_table():
        shown = f"{value!r} {unit}".rstrip()
        lines.append(f"  {name:<12} = {shown:<24} {description}")
    methods = [m for m in ("start", "stop", "wait", "maw", "read", "status", "reset",
                           "finish", "adjust") if callable(getattr(device, m, None))]
    lines.append("methods: " + ", ".join(f"{device.name}.{m}()" for m in methods))
    return "\n".join(lines)


@usercommand(example="help(maw)")
def help(session: Session, obj: Any = _NOTHING) -> None:  # noqa: A001 - it is the user's help
    """Show help on a command, a device or anything else.

    ``help()`` gives an overview, ``help(maw)`` explains a command,
    ``help(mono)`` shows a device with its parameters.
    """
    if obj is _NOTHING:
        devices = ", ".join(sorted(session.devices)) or "none"
        user_log.info("Commands:\n%s\n\nDevices: %s\n\nType help(name) for more.",
                      "\n".join(command_lines(session)), devices)
        return
    info = command_info(obj)
    if info is not None:
        text = f"{info.name}{_signature(obj)}\n\n{inspect.getdoc(obj) or ''}"
        if info.example:
            text += f"\n\nExample: {info.example}"
        user_log.info("%s", text.rstrip())
    elif isinstance(obj, Device):
        user_log.info("%s", _device_help(obj))
    else:
        user_log.info("%s", pydoc.render_doc(obj, renderer=pydoc.plaintext).rstrip())


__all__ = ["ListCommands", "help", "printerror", "printinfo", "printwarning", "sleep"]
