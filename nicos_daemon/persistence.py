"""What must survive a crash: the queue, the run history and the message log.

Everything lives in one SQLite database (WAL mode) in the data directory.
Queue changes are committed before the client gets its reply, so a request
acknowledged to a client is never lost; after ``kill -9`` and a restart the
queue comes back in order, and a request that was running is recorded as
interrupted (and not run again by itself).  Messages are written by a
background thread in batches: they are many, and losing the last few lines of
output in a crash is acceptable where losing a queued experiment is not.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("nicos_daemon.persistence")

DB_NAME = "daemon-state.sqlite"
MAX_STORED_MESSAGES = 100_000
MESSAGE_QUEUE_LIMIT = 50_000
MESSAGE_BATCH = 500

QUEUED, RUNNING, SUCCEEDED, FAILED, STOPPED, BLOCKED, INTERRUPTED = (
    "queued", "running", "succeeded", "failed", "stopped", "blocked", "interrupted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    reqid      TEXT PRIMARY KEY,
    position   REAL,
    name       TEXT,
    script     TEXT NOT NULL,
    user       TEXT NOT NULL,
    user_level INTEGER NOT NULL,
    submitted  REAL NOT NULL,
    started    REAL,
    ended      REAL,
    outcome    TEXT NOT NULL,
    error      TEXT
);
CREATE INDEX IF NOT EXISTS requests_by_outcome ON requests (outcome, position);
CREATE INDEX IF NOT EXISTS requests_by_submitted ON requests (submitted);
CREATE TABLE IF NOT EXISTS messages (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    logger   TEXT NOT NULL,
    created  REAL NOT NULL,
    level    INTEGER NOT NULL,
    text     TEXT NOT NULL,
    exc_text TEXT,
    reqid    TEXT
);
"""


@dataclass
class StoredRequest:
    reqid: str
    name: str | None
    script: str
    user: str
    user_level: int
    submitted: float


class StateStore:
    """The daemon's durable state.  Thread-safe; every method commits."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / DB_NAME
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against a crash of the process (kill -9), which is
        # what we guard against; FULL would add an fsync per queue change
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._messages: queue.Queue[list | None] = queue.Queue(MESSAGE_QUEUE_LIMIT)
        self._dropped_messages = 0
        self._writer = threading.Thread(target=self._write_messages, name="message-writer",
                                        daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Flush pending messages and close the database."""
        self._messages.put(None)
        self._writer.join(10)
        with self._lock:
            self._db.close()

    def _execute(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # ---------------------------------------------------------------- queue

    def add_queued(self, reqid: str, name: str | None, script: str, user: str,
                   user_level: int, submitted: float) -> None:
        with self._lock:
            position = self._db.execute(
                "SELECT COALESCE(MAX(position), 0) + 1 FROM requests WHERE outcome = ?",
                (QUEUED,)).fetchone()[0]
            self._db.execute(
                "INSERT INTO requests (reqid, position, name, script, user, user_level,"
                " submitted, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (reqid, position, name, script, user, user_level, submitted, QUEUED))

    def set_order(self, reqids: list[str]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            for position, reqid in enumerate(reqids, 1):
                self._db.execute("UPDATE requests SET position = ? WHERE reqid = ?",
                                 (position, reqid))
            self._db.execute("COMMIT")

    def update_script(self, reqid: str, script: str, user: str) -> None:
        self._execute("UPDATE requests SET script = ?, user = ? WHERE reqid = ?",
                      (script, user, reqid))

    def mark_blocked(self, reqids: list[str]) -> None:
        if not reqids:
            return
        now = time.time()
        with self._lock:
            self._db.executemany(
                "UPDATE requests SET outcome = ?, ended = ?, position = NULL WHERE reqid = ?",
                [(BLOCKED, now, reqid) for reqid in reqids])

    def mark_started(self, reqid: str) -> None:
        self._execute("UPDATE requests SET outcome = ?, started = ?, position = NULL"
                      " WHERE reqid = ?", (RUNNING, time.time(), reqid))

    def mark_finished(self, reqid: str, outcome: str, error: str | None = None) -> None:
        self._execute("UPDATE requests SET outcome = ?, ended = ?, error = ? WHERE reqid = ?",
                      (outcome, time.time(), error, reqid))

    def recover(self) -> tuple[list[StoredRequest], list[str]]:
        """After a restart: the queued requests in order, and the ids of
        requests that were running when the daemon died (now 'interrupted')."""
        with self._lock:
            interrupted = [row[0] for row in self._db.execute(
                "SELECT reqid FROM requests WHERE outcome = ?", (RUNNING,))]
            self._db.execute(
                "UPDATE requests SET outcome = ?, ended = ?, "
                "error = 'the daemon stopped while this request was running' "
                "WHERE outcome = ?", (INTERRUPTED, time.time(), RUNNING))
            queued = [StoredRequest(*row) for row in self._db.execute(
                "SELECT reqid, name, script, user, user_level, submitted FROM requests"
                " WHERE outcome = ? ORDER BY position", (QUEUED,))]
        return queued, interrupted

    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        """Past and present requests, newest first."""
        rows = self._execute(
            "SELECT reqid, name, script, user, submitted, started, ended, outcome, error"
            " FROM requests ORDER BY submitted DESC LIMIT ?", (max(1, min(limit, 10_000)),))
        keys = ("reqid", "name", "script", "user", "submitted", "started", "ended",
                "outcome", "error")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # ------------------------------------------------------------- messages

    def add_message(self, record: list) -> None:
        """Queue a message record for writing; never blocks."""
        try:
            self._messages.put_nowait(record)
        except queue.Full:
            self._dropped_messages += 1

    def recent_messages(self, count: int) -> list[list]:
        rows = self._execute(
            "SELECT logger, created, level, text, exc_text, reqid FROM messages"
            " ORDER BY id DESC LIMIT ?", (count,))
        return [list(row) for row in reversed(rows)]

    def _write_messages(self) -> None:
        written_since_trim = 0
        while True:
            first = self._messages.get()
            batch = [first]
            while len(batch) < MESSAGE_BATCH:
                try:
                    batch.append(self._messages.get_nowait())
                except queue.Empty:
                    break
            closing = None in batch
            rows = [tuple(r[:6]) for r in batch if r is not None]
            try:
                with self._lock:
                    self._db.executemany(
                        "INSERT INTO messages (logger, created, level, text, exc_text, reqid)"
                        " VALUES (?, ?, ?, ?, ?, ?)", rows)
                    written_since_trim += len(rows)
                    if written_since_trim > MAX_STORED_MESSAGES // 10:
                        written_since_trim = 0
                        self._db.execute(
                            "DELETE FROM messages WHERE id <= "
                            "(SELECT MAX(id) FROM messages) - ?", (MAX_STORED_MESSAGES,))
            except sqlite3.Error as err:
                log.error("could not store %d messages: %s", len(rows), err)
            if self._dropped_messages:
                log.warning("%d messages were not stored (writer behind)",
                            self._dropped_messages)
                self._dropped_messages = 0
            if closing:
                return
