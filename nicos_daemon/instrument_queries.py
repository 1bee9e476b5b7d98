"""What clients ask about the instrument rather than the script: recorded
values, cache keys and scan datasets.

The session and the value history are set on the controller once the
instrument layer is loaded (instrument.py); without them the answers are
empty.
"""

from __future__ import annotations

import logging
from typing import Any

from nicos_daemon.history import cache_keys

# a part of the script controller: its records keep the controller's name
log = logging.getLogger("nicos_daemon.controller")


def value_history(store: Any, key: str, fromtime: Any, totime: Any, interval: Any) -> list:
    """``[[time, value], ...]`` of a device key from the value history store."""
    if store is None:
        return []
    return store.history(str(key), float(fromtime), float(totime),
                         float(interval) if interval else None)


def cache_entries(session: Any, store: Any, query: str) -> list:
    """``[[key, value], ...]`` for ``query``: live values, else the devices'
    stored parameters, else the last recorded values."""
    live: dict[str, tuple[float, Any]] = {}
    if session is not None:
        live = _parameter_values(session)
        live.update(session.current_values())
    return cache_keys(live, store, query)


def _parameter_values(session: Any) -> dict[str, tuple[float, Any]]:
    """``{"dev/param": (0.0, value)}`` of every device's stored parameters."""
    values: dict[str, tuple[float, Any]] = {}
    for name, device in list(session.devices.items()):
        try:
            table = device.parameter_table()
        except Exception as err:  # noqa: BLE001 - one odd device must not hide the rest
            log.warning("cannot list the parameters of %s: %s", name, err)
            continue
        for param, value, _unit, _description in table:
            values[f"{name.lower()}/{param.lower()}"] = (0.0, value)
    return values


def datasets(session: Any, index: Any) -> Any:
    """A recent scan dataset as a JSON object by position, or all with ``*``."""
    if session is None:
        return [] if index == "*" else None
    if index == "*":
        return [dataset.to_dict() for dataset in session.data.recent()]
    dataset = session.data.get(int(index))
    return dataset.to_dict() if dataset is not None else None
