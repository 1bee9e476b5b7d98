"""What the daemon and a simulation process say to each other: JSON lines.

The daemon starts ``python -m nicos.simulation.child`` and writes one line
to its stdin, the request::

    {"simid": str, "name": str, "code": str, "user": str,
     "setups": [str, ...],            # the explicitly loaded setups
     "setup_paths": [str, ...],       # where setups are looked up
     "devices": {device: {"value": v, param: v, ...}},   # the instrument now
     "max_messages": int}

and keeps stdin open: the process ends by itself when stdin closes (the
daemon went away).  The process answers on stdout, one JSON object per line
with one key each; the result is the last line::

    {"message": [logger, time, level, text, exc_text or null, simid]}
    {"result": {"ok": bool, "duration": float (virtual seconds),
                "devinfo": {device: [last, lowest, highest, []]}}}

``devinfo`` values are texts as the device formats them, with unit.
Nothing is ever pickled; malformed lines are skipped by the reader.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from nicos.protocols.daemon.codec import CodecError, to_wire

if TYPE_CHECKING:
    from nicos.core.session import Session

MAX_TEXT = 8192  # characters of one message text
MAX_MESSAGES = 1000  # messages of one simulation (then one "suppressed" note)
MAX_LINE = 1 << 20  # bytes of one line the daemon reads

_REQUEST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "simid": str, "name": str, "code": str, "user": str, "setups": list,
    "setup_paths": list, "devices": dict, "max_messages": int,
}


class WireError(ValueError):
    """A request that does not have the expected shape."""


def _plain(value: Any) -> Any:
    """``value`` as JSON values, or raise CodecError."""
    wire = to_wire(value)
    json.dumps(wire)
    return wire


def snapshot(session: Session) -> dict[str, dict[str, Any]]:
    """The state a simulation starts from: every settable parameter of every
    device (limits, offsets, speeds, ...) and the current value of every
    moveable device, as far as they can be sent as JSON."""
    from nicos.core.readable import Moveable

    values = session.current_values()
    devices: dict[str, dict[str, Any]] = {}
    for name, device in list(session.devices.items()):
        entry: dict[str, Any] = {}
        for pname, param in type(device).all_parameters.items():
            if param.settable and pname in device._params:
                try:
                    entry[pname] = _plain(device._params[pname])
                except (CodecError, ValueError, TypeError):
                    continue
        current = values.get(f"{name.lower()}/value")
        if isinstance(device, Moveable) and current is not None:
            try:
                entry["value"] = _plain(current[1])
            except (CodecError, ValueError, TypeError):
                pass
        devices[name] = entry
    return devices


def request_line(*, simid: str, name: str, code: str, user: str, setups: list[str],
                 setup_paths: list[str], devices: dict[str, dict[str, Any]],
                 max_messages: int = MAX_MESSAGES) -> bytes:
    """The request, as the line the daemon writes to the process."""
    request = {"simid": simid, "name": name, "code": code, "user": user,
               "setups": list(setups), "setup_paths": [str(p) for p in setup_paths],
               "devices": devices, "max_messages": max_messages}
    return (json.dumps(request) + "\n").encode()


def read_request(line: str | bytes) -> dict[str, Any]:
    """The request from its line; WireError if it is not one."""
    try:
        request = json.loads(line)
    except ValueError as err:
        raise WireError(f"request is not JSON: {err}") from None
    if not isinstance(request, dict):
        raise WireError("request is not a JSON object")
    for key, kind in _REQUEST_FIELDS.items():
        if not isinstance(request.get(key), kind):
            raise WireError(f"request field '{key}' is missing or not a {kind}")
    return request


def message_line(record: list[Any]) -> str:
    return json.dumps({"message": record}) + "\n"


def result_line(ok: bool, duration: float, devinfo: dict[str, list[Any]]) -> str:
    return json.dumps({"result": {"ok": ok, "duration": duration, "devinfo": devinfo}}) + "\n"


def parse_line(line: bytes) -> tuple[str, Any] | None:
    """``('message', record)`` or ``('result', dict)``; None for anything else."""
    try:
        item = json.loads(line)
    except ValueError:
        return None
    if not isinstance(item, dict) or len(item) != 1:
        return None
    kind, payload = next(iter(item.items()))
    if kind == "message" and isinstance(payload, list) and len(payload) == 6:
        return kind, payload
    if kind == "result" and isinstance(payload, dict):
        return kind, payload
    return None


__all__ = ["MAX_LINE", "MAX_MESSAGES", "MAX_TEXT", "WireError", "message_line",
           "parse_line", "read_request", "request_line", "result_line", "snapshot"]
