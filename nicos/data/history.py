"""Value history: device values and statuses over time, in an SQLite file.

``record(time, key, value)`` is what the session's value listener calls,
from whatever thread changed the value (a motor's travel thread, the script
thread).  It never blocks: the value is encoded and put on a bounded queue,
and one writer thread stores the queue in batches, one transaction each.
When the queue is full (the disk cannot keep up), values are dropped and
counted, and the log says so.

The file uses SQLite's write-ahead log, so queries (any thread, each with
its own connection) read while the writer writes.  Keys are ``dev/param``
in lower case; values are stored as JSON (tuples become lists; values JSON
cannot hold are stored as their ``repr`` text).

Queries:

- ``history(key, fromtime, totime, interval)`` -> ``[[time, value], ...]``
  in time order: the value in force at ``fromtime`` (with the time it was
  set, which is earlier), then every change up to ``totime``.  With an
  ``interval`` (seconds), at most one point per interval: the first one of
  each interval counted from ``fromtime``.  At most MAX_POINTS points.
- ``keys(prefix)`` -> sorted keys starting with ``prefix``.
- ``latest(keys)`` -> ``{key: (time, value)}``, the last value of each key.

Queries see everything recorded before they were called (they wait
briefly for the writer to catch up).
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nicos.protocols.daemon.codec import CodecError, to_wire

log = logging.getLogger("nicos.data.history")

MAX_QUEUE = 100_000
BATCH = 2_000
MAX_POINTS = 100_000
CATCH_UP_TIMEOUT = 2.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS keys (id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL)",
    "CREATE TABLE IF NOT EXISTS history (key_id INTEGER NOT NULL, time REAL NOT NULL, "
    "value TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS history_by_key_time ON history (key_id, time)",
)

_STOP = object()


def encode_value(value: Any) -> str:
    """The stored text of a value: JSON, or JSON of its repr."""
    try:
        return json.dumps(to_wire(value), allow_nan=True)
    except (CodecError, ValueError, TypeError):
        return json.dumps(repr(value))


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class HistoryStore:
    """Records values into an SQLite file and answers history queries."""

    def __init__(self, path: Path, max_queue: int = MAX_QUEUE) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._dropped = 0
        self._closed = False
        connection = self._connect()  # the writer's; created here so errors show at once
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                connection.execute(statement)
            connection.commit()
        except sqlite3.Error:
            connection.close()
            raise
        self._writer = threading.Thread(target=self._write_loop, args=(connection,),
                                        name="history-writer", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10.0, check_same_thread=False)

    # ------------------------------------------------------------ writing

    def record(self, when: float, key: str, value: Any) -> None:
        """Queue a value for storing; never blocks (drops when full)."""
        if self._closed:
            return
        try:
            self._queue.put_nowait((float(when), key.lower(), encode_value(value)))
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 10_000 == 0:
                log.error("value history cannot keep up: %d value(s) dropped", self._dropped)

    @property
    def dropped(self) -> int:
        """Values dropped because the queue was full."""
        return self._dropped

    def flush(self, timeout: float = CATCH_UP_TIMEOUT) -> bool:
        """Wait until everything recorded so far is stored; False on timeout."""
        if self._closed or not self._writer.is_alive():
            return False
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Store what is queued and end the writer."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join(timeout)

    def _write_loop(self, connection: sqlite3.Connection) -> None:
        key_ids: dict[str, int] = {}
        try:
            while True:
                items = [self._queue.get()]
                while len(items) < BATCH:
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                rows = [item for item in items if isinstance(item, tuple)]
                if rows:
                    self._store(connection, key_ids, rows)
                for item in items:
                    if isinstance(item, threading.Event):
                        item.set()
                if any(item is _STOP for item in items):
                    return
        finally:
            connection.close()

    @staticmethod
    def _store(connection: sqlite3.Connection, key_ids: dict[str, int],
               rows: list[tuple[float, str, str]]) -> None:
        try:
            with connection:
                for key in {key for _, key, _ in rows if key not in key_ids}:
                    connection.execute("INSERT OR IGNORE INTO keys (key) VALUES (?)", (key,))
                    key_ids[key] = connection.execute(
                        "SELECT id FROM keys WHERE key = ?", (key,)).fetchone()[0]
                connection.executemany(
                    "INSERT INTO history (key_id, time, value) VALUES (?, ?, ?)",
                    [(key_ids[key], when, text) for when, key, text in rows])
        except sqlite3.Error as err:
            key_ids.clear()  # ids of a rolled-back transaction may not exist
            log.error("value history: %d value(s) could not be stored: %s", len(rows), err)

    # ------------------------------------------------------------ queries

    def _reader(self) -> sqlite3.Connection:
        self.flush()
        return sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True,
                               timeout=10.0)

    def history(self, key: str, fromtime: float, totime: float,
                interval: float | None = None) -> list[list[Any]]:
        """``[[time, value], ...]`` of ``key`` (see the module docstring)."""
        connection = self._reader()
        try:
            row = connection.execute("SELECT id FROM keys WHERE key = ?",
                                     (key.lower(),)).fetchone()
            if row is None:
                return []
            key_id = row[0]
            before = connection.execute(
                "SELECT time, value FROM history WHERE key_id = ? AND time < ? "
                "ORDER BY time DESC LIMIT 1", (key_id, fromtime)).fetchall()
            if interval:
                # SQLite: a bare column next to MIN() comes from the row with the minimum
                rows = connection.execute(
                    "SELECT MIN(time), value FROM history "
                    "WHERE key_id = ? AND time >= ? AND time <= ? "
                    "GROUP BY CAST((time - ?) / ? AS INTEGER) ORDER BY 1 LIMIT ?",
                    (key_id, fromtime, totime, fromtime, interval, MAX_POINTS - 1)).fetchall()
            else:
                rows = connection.execute(
                    "SELECT time, value FROM history "
                    "WHERE key_id = ? AND time >= ? AND time <= ? ORDER BY time LIMIT ?",
                    (key_id, fromtime, totime, MAX_POINTS - 1)).fetchall()
        finally:
            connection.close()
        return [[when, _decode(text)] for when, text in before + rows]

    def keys(self, prefix: str = "") -> list[str]:
        """Every recorded key starting with ``prefix``, sorted."""
        prefix = prefix.lower()
        connection = self._reader()
        try:
            rows = connection.execute(
                "SELECT key FROM keys WHERE substr(key, 1, ?) = ? ORDER BY key",
                (len(prefix), prefix)).fetchall()
        finally:
            connection.close()
        return [key for (key,) in rows]

    def latest(self, keys: Iterable[str]) -> dict[str, tuple[float, Any]]:
        """The last recorded ``(time, value)`` of each of ``keys`` that has one."""
        wanted = [k.lower() for k in keys]
        connection = self._reader()
        try:
            found = {}
            for key in wanted:
                row = connection.execute(
                    "SELECT h.time, h.value FROM history h JOIN keys k ON h.key_id = k.id "
                    "WHERE k.key = ? ORDER BY h.time DESC LIMIT 1", (key,)).fetchone()
                if row is not None:
                    found[key] = (row[0], _decode(row[1]))
        finally:
            connection.close()
        return found


__all__ = ["BATCH", "MAX_POINTS", "MAX_QUEUE", "HistoryStore", "encode_value"]
