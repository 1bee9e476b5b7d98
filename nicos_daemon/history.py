"""The daemon's value history: where the store lives and how it answers
``gethistory`` and ``getcachekeys``.

The store (nicos.data.history) is an SQLite file in the data directory; the
session's value listener feeds it.  ``getcachekeys`` answers from the live
values of the session and, for keys not seen since the daemon started, from
the last recorded value.  Values are sent as plain JSON values (numbers,
strings, lists), as upstream sends the cache's values, never as objects.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from nicos.data.history import HistoryStore
from nicos.protocols.daemon.codec import CodecError, to_wire

log = logging.getLogger("nicos_daemon.history")

HISTORY_FILE = "value-history.sqlite"


def open_history(datadir: Path) -> HistoryStore:
    """The value history store of the data directory (created if missing)."""
    return HistoryStore(Path(datadir) / HISTORY_FILE)


def _wire_value(value: Any) -> Any:
    try:
        return to_wire(value)
    except CodecError:
        return repr(value)


def cache_keys(live: dict[str, tuple[float, Any]], store: HistoryStore | None,
               query: str) -> list[list[Any]]:
    """``[[key, value], ...]`` sorted by key; ``query``: exact keys separated
    by commas, or a key prefix."""
    if "," in query:
        wanted = {k.strip().lower() for k in query.split(",") if k.strip()}
    else:
        prefix = query.lower()
        wanted = {k for k in live if k.startswith(prefix)}
        if store is not None:
            wanted.update(store.keys(prefix))
    values = {k: live[k][1] for k in wanted if k in live}
    missing = [k for k in wanted if k not in live]
    if store is not None and missing:
        values.update({k: v for k, (_, v) in store.latest(missing).items()})
    return [[key, _wire_value(values[key])] for key in sorted(values)]


__all__ = ["HISTORY_FILE", "cache_keys", "open_history"]
