"""Checking the arguments of user commands, with messages in the user's words.

``maw(mono)`` -> "maw() needs a device and a target, e.g. maw(mono, 2.5)";
``maw('mno', 1)`` -> "maw(): no device named 'mno' (did you mean 'mono'?)".
Devices may be given as objects or by name.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from nicos.core import Device, Measurable, Moveable, Readable, Session, UsageError
from nicos.core.device import suggestion
from nicos.core.paramtypes import describe_value
from nicos.core.usercommand import CommandInfo, command_info

D = TypeVar("D", bound=Device)

# what a device of each kind can do, for "mono cannot ..." messages
_ABILITY = {Moveable: "be moved", Readable: "be read", Measurable: "count"}


def info_of(command: Callable[..., Any]) -> CommandInfo:
    info = command_info(command)
    assert info is not None, f"{command} is not a user command"
    return info


def device_argument(session: Session, info: CommandInfo, value: Any,
                    kind: type[D] | tuple[type, ...] = Device) -> D:
    """``value`` as a device of ``kind``, or a UsageError for this command."""
    if isinstance(value, str):
        device = session.devices.get(value)
        if device is None:
            raise UsageError(f"{info.name}(): no device named '{value}'"
                             f"{suggestion(value, session.devices)}")
    elif isinstance(value, Device):
        device = value
    else:
        raise info.usage_error(f"expected a device, got {describe_value(value)}")
    if not isinstance(device, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        can = " or ".join(_ABILITY.get(k, f"be used as {k.__name__}") for k in kinds)
        raise UsageError(f"{info.name}(): {device} cannot {can} "
                         f"(it is a {type(device).__name__})")
    return device  # type: ignore[return-value]


def device_arguments(session: Session, info: CommandInfo, values: Sequence[Any],
                     kind: type[D] | tuple[type, ...]) -> list[D]:
    """Several devices; none given means every loaded device of ``kind``."""
    if not values:
        return [d for d in session.devices.values() if isinstance(d, kind)]  # type: ignore[misc]
    return [device_argument(session, info, v, kind) for v in values]


def device_target_pairs(session: Session, info: CommandInfo,
                        args: Sequence[Any]) -> list[tuple[Moveable, Any]]:
    """``dev1, target1, dev2, target2, ...`` as pairs."""
    if not args:
        raise info.usage_error()
    if len(args) % 2:
        last = args[-1]
        if len(args) > 1 and isinstance(last, (Device, str)):
            raise info.usage_error(f"got no target for {last}")
        raise info.usage_error()
    pairs = []
    for device, target in zip(args[::2], args[1::2], strict=True):
        pairs.append((device_argument(session, info, device, Moveable), target))
    return pairs


def number_argument(info: CommandInfo, value: Any, what: str, minimum: float = 0.0) -> float:
    """A real number >= minimum."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or value < minimum:
        raise info.usage_error(f"needs {what} as a number >= {minimum:g}, "
                               f"got {describe_value(value)}")
    return float(value)


def name_arguments(info: CommandInfo, values: Sequence[Any]) -> list[str]:
    """Names given as strings."""
    for value in values:
        if not isinstance(value, str):
            raise info.usage_error(f"needs names as strings, got {describe_value(value)}")
    return list(values)


__all__ = ["device_argument", "device_arguments", "device_target_pairs", "info_of",
           "name_arguments", "number_argument"]
