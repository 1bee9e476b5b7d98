"""Helpers for integration tests against a real ``nicos_daemon`` process.

- :class:`DaemonProcess`: writes a TOML configuration into a temporary directory,
  starts ``python -m nicos_daemon.main --config FILE`` on a free loopback port and
  waits for its ``nicos-daemon listening on HOST:PORT`` line; stops it with SIGTERM
  and reports how it ended.
- :class:`EventRecorder`: our client library's ``NicosClient`` that keeps every
  event in order and lets a test wait for a specific one (condition variable, no
  polling).
- :class:`RawConnection`: a bare socket speaking the wire protocol by hand, for
  frames our client library would never send.

Everything here synchronises on events with a timeout; nothing sleeps.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rsa

from nicos.clients.base import DaemonError, NicosClient
from nicos.protocols.daemon import CLIENT_ID_LEN, command2code
from nicos.protocols.daemon.codec import decode, encode
from nicos.protocols.daemon.framing import command_frame, read_reply

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT = 60.0  # seconds until the daemon must announce that it listens
STOP_TIMEOUT = 20.0  # seconds from SIGTERM until the daemon must have exited
WAIT = 10.0  # default seconds to wait for an event; a guard, never reached when tests pass

LISTENING = re.compile(r"nicos-daemon listening on (\S+):(\d+)")

IDLE_STATES = (-2, -1)


@dataclass(frozen=True)
class Account:
    name: str
    password: str
    level: str  # "guest" / "user" / "admin"
    hash: str  # scrypt hash for the [passwd] table

    @property
    def level_number(self) -> int:
        return {"guest": 0, "user": 10, "admin": 20}[self.level]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        # A JSON string with only ASCII escapes is a valid TOML basic string.
        return json.dumps(str(value), ensure_ascii=True)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config(path: Path, settings: Mapping[str, Any], accounts: Iterable[Account]) -> None:
    lines = [f"{key} = {_toml_value(value)}" for key, value in settings.items()]
    for account in accounts:
        lines += ["", f"[passwd.{json.dumps(account.name)}]",
                  f"hash = {_toml_value(account.hash)}",
                  f"level = {_toml_value(account.level)}"]
    path.write_text("\n".join(lines) + "\n")


def process_snapshot(pid: int) -> str:
    """Threads of a process with their signal masks and kernel wait channels (Linux)."""
    lines = []
    try:
        for task in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
            base = f"/proc/{pid}/task/{task}"
            with open(f"{base}/status") as status_file:
                fields = dict(line.split(":", 1) for line in status_file.read().splitlines()
                              if ":" in line)
            with open(f"{base}/wchan") as wchan_file:
                wchan = wchan_file.read()
            lines.append(f"  thread {task} {fields['Name'].strip()!r}: wchan {wchan}, "
                         f"SigPnd {fields['SigPnd'].strip()}, ShdPnd {fields['ShdPnd'].strip()}, "
                         f"SigBlk {fields['SigBlk'].strip()}")
    except OSError as err:
        lines.append(f"  <{err}>")
    return "\n".join(lines)


class DaemonProcess:
    """One daemon process with its own configuration, data and log directory."""

    def __init__(self, workdir: Path, rsakey: Path, accounts: Iterable[Account], *,
                 port: int | None = None, **settings: Any) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.accounts = {account.name: account for account in accounts}
        self.host = HOST
        self.port = port if port is not None else free_port()
        self.config_path = self.workdir / "daemon.toml"
        self.stderr_path = self.workdir / "daemon.stderr"
        self.logdir = self.workdir / "log"
        self.datadir = self.workdir / "data"
        self.settings: dict[str, Any] = {
            "server": f"{self.host}:{self.port}",
            "authmethod": "list",
            "datadir": str(self.datadir),
            "logdir": str(self.logdir),
            "rsakey": str(rsakey),
            "updateinterval": 0.05,
            # Tests log in with wrong passwords on purpose; the throttle has its own test.
            "throttle_failures": 100,
            # Clients of one test may still be logging out when the next test logs in.
            "maxlogins": 50,
        }
        self.settings.update(settings)
        self.proc: subprocess.Popen[str] | None = None
        self.stdout_lines: list[str] = []
        self._ready = threading.Event()
        # Set when the daemon is ready or its stdout ended (it died): one wait covers both.
        self._settled = threading.Event()
        self.listening_line = ""
        self._reader: threading.Thread | None = None
        self._stderr_file: Any = None
        self.hang_report = ""  # threads and signal state, if SIGTERM did not end it

    # -- life cycle --------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> DaemonProcess:
        write_config(self.config_path, self.settings, self.accounts.values())
        self._ready.clear()
        self._settled.clear()
        self.stdout_lines = []
        self._stderr_file = open(self.stderr_path, "ab")  # closed in _finish()
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT)  # this checkout, installed or not
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nicos_daemon.main", "--config", str(self.config_path)],
            cwd=self.workdir,  # relative paths in the daemon must not depend on our cwd
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read_stdout, args=(self.proc,),
                                        name="daemon-stdout", daemon=True)
        self._reader.start()
        self._settled.wait(timeout)
        if not self._ready.is_set():
            code = self.proc.poll()
            if code is None and self._settled.is_set():  # output ended: it is exiting
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = self.proc.wait(5)
            self.kill()
            why = f"it exited with code {code}" if code is not None else f"within {timeout} s"
            raise RuntimeError(f"daemon did not announce 'nicos-daemon listening on' "
                               f"({why})\n{self.diagnostics()}")
        match = LISTENING.search(self.listening_line)
        assert match is not None
        announced = (match.group(1).strip("[]"), int(match.group(2)))
        if announced != (self.host, self.port):
            self.kill()
            raise RuntimeError(f"daemon listens on {announced}, configured "
                               f"{(self.host, self.port)}: {self.listening_line!r}")
        return self

    def _read_stdout(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                self.stdout_lines.append(line)
                if not self._ready.is_set() and LISTENING.search(line):
                    self.listening_line = line
                    self._ready.set()
                    self._settled.set()
        finally:
            self._settled.set()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then wait; SIGKILL if it does not exit.  Returns the exit code,
        or None if it had to be killed."""
        proc = self.proc
        if proc is None:
            return None
        code: int | None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.hang_report = process_snapshot(proc.pid)
                self.kill()
                code = None
        else:
            code = proc.returncode
        self._finish()
        return code

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
        self._finish()

    def _finish(self) -> None:
        if self._reader is not None:
            self._reader.join(5)
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None

    def stop_and_check(self) -> None:
        """Stop with SIGTERM and require a clean exit (code 0)."""
        code = self.stop()
        assert code == 0, (f"daemon did not exit cleanly after SIGTERM "
                           f"(exit code {code}; None = had to be killed)\n{self.diagnostics()}")

    # -- diagnostics -------------------------------------------------------------------

    def diagnostics(self, tail: int = 80) -> str:
        parts = [f"--- daemon in {self.workdir} ---",
                 f"config:\n{self._read(self.config_path, hide_hashes=True)}",
                 "stdout:\n" + "".join(self.stdout_lines[-tail:]),
                 "stderr:\n" + self._tail(self.stderr_path, tail)]
        if self.hang_report:
            parts.append("still running after SIGTERM:\n" + self.hang_report)
        if self.logdir.is_dir():
            for logfile in sorted(p for p in self.logdir.rglob("*") if p.is_file()):
                parts.append(f"log {logfile}:\n{self._tail(logfile, tail)}")
        return "\n".join(parts)

    @staticmethod
    def _read(path: Path, hide_hashes: bool = False) -> str:
        try:
            text = path.read_text(errors="replace")
        except OSError as err:
            return f"<{err}>"
        if hide_hashes:
            text = re.sub(r'hash = ".*"', 'hash = "..."', text)
        return text

    @classmethod
    def _tail(cls, path: Path, lines: int) -> str:
        return "\n".join(cls._read(path).splitlines()[-lines:])

    # -- clients -------------------------------------------------------------------------

    def connect(self, user: str = "admin", *, eventmask: Iterable[str] = (),
                password: str | None = None) -> EventRecorder:
        client = EventRecorder()
        account = self.accounts.get(user)
        if password is None:
            assert account is not None, f"no account {user!r}"
            password = account.password
        client.connect(self.host, self.port, user, password, eventmask=eventmask,
                       timeout=WAIT * 3)
        return client

    def raw(self, timeout: float = WAIT) -> RawConnection:
        return RawConnection(self.host, self.port, timeout)


# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    seq: int
    name: str
    data: Any

    def __repr__(self) -> str:
        return f"#{self.seq} {self.name} {self.data!r}"


Predicate = Callable[[Any], bool]


class EventRecorder(NicosClient):
    """Our client library, recording every signal (events and connection changes)."""

    def __init__(self) -> None:
        super().__init__()
        self.cond = threading.Condition()
        self.log: list[Event] = []
        self.cursor = 0

    def signal(self, name: str, *args: Any) -> None:
        with self.cond:
            self.log.append(Event(len(self.log), name, args[0] if args else None))
            self.cond.notify_all()

    def mark(self) -> int:
        """Move the wait cursor to the end of the log and return that position."""
        with self.cond:
            self.cursor = len(self.log)
            return self.cursor

    def wait_for(self, name: str | tuple[str, ...], predicate: Predicate | None = None,
                 timeout: float = WAIT, since: int | None = None) -> Event:
        """The first event called *name* (or one of *name*) after the cursor (or
        *since*) for which *predicate(data)* is true; the cursor moves past it.

        Raises AssertionError on timeout, listing what did arrive.
        """
        names = (name,) if isinstance(name, str) else name
        deadline = time.monotonic() + timeout
        with self.cond:
            index = self.cursor if since is None else since
            start = index
            while True:
                while index < len(self.log):
                    event = self.log[index]
                    index += 1
                    if event.name in names and (predicate is None or predicate(event.data)):
                        self.cursor = index
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = "\n  ".join(map(repr, self.log[start:][-60:]))
                    raise AssertionError(
                        f"no {'/'.join(names)} event matching within {timeout} s; "
                        f"events since #{start}:\n  {seen}")
                self.cond.wait(remaining)

    def events(self, name: str | tuple[str, ...] | None = None, since: int = 0,
               until: int | None = None) -> list[Event]:
        names = (name,) if isinstance(name, str) else name
        with self.cond:
            return [event for event in self.log[since:until]
                    if names is None or event.name in names]

    # -- conveniences --------------------------------------------------------------------

    def wait_done(self, reqid: str, timeout: float = WAIT, since: int | None = None) -> Event:
        return self.wait_for("done", lambda d: d.get("reqid") == reqid, timeout, since)

    def wait_status(self, state: int, line: int | None = None,
                    timeout: float = WAIT, since: int | None = None) -> Event:
        return self.wait_for(
            "status", lambda d: d[0] == state and (line is None or d[1] == line), timeout,
            since)

    def messages(self, since: int = 0, reqid: str | None = None) -> list[list[Any]]:
        return [event.data for event in self.events("message", since)
                if reqid is None or event.data[5] == reqid]


class Gate:
    """A file the test creates to let a waiting script go on.

    ``wait_code()`` is a two-line loop (one top-level statement) for a script; it
    sleeps in short steps, so break and stop requests reach it at once.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def wait_code(self) -> str:
        return (f"while not __import__('os').path.exists({str(self.path)!r}):\n"
                f"    sleep(0.01)\n")

    def open(self) -> None:
        self.path.touch()


def make_idle(client: EventRecorder, timeout: float = WAIT) -> None:
    """Bring the daemon back to idle with an empty queue (test cleanup)."""
    status = client.ask("getstatus")
    if status["requests"]:
        client.ask("unqueue", "*")
    if status["status"][0] not in IDLE_STATES:
        since = client.mark()
        try:
            client.ask("stop", 5)
        except DaemonError as err:  # the script ended after getstatus
            assert "no script is running" in str(err), err
        else:
            client.wait_for("status", lambda d: d[0] in IDLE_STATES, timeout, since)
    # The stop may have raced with a request being taken up; check once more.
    status = client.ask("getstatus")
    assert status["status"][0] in IDLE_STATES and not status["requests"], status


# ---------------------------------------------------------------------------------------


class RawConnection:
    """A control connection driven byte by byte."""

    def __init__(self, host: str, port: int, timeout: float = WAIT) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.client_id = os.urandom(CLIENT_ID_LEN)
        self.banner: dict[str, Any] | None = None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def hello(self) -> dict[str, Any]:
        """Send the client id and read the banner."""
        self.sock.sendall(self.client_id)
        ok, payload = read_reply(self.sock)
        assert ok and payload, f"banner refused: {payload!r}"
        banner = decode(payload)
        assert isinstance(banner, dict), banner
        self.banner = banner
        return banner

    def encrypt(self, password: str) -> str:
        assert self.banner is not None
        key = rsa.PublicKey.load_pkcs1(base64.b64decode(self.banner["rsakey"]))
        return "RSA:" + base64.b64encode(rsa.encrypt(password.encode(), key)).decode()

    def login(self, user: str, password: str, **extra: str) -> tuple[bool, Any]:
        if self.banner is None:
            self.hello()
        return self.command("authenticate", {"login": user, "passwd": self.encrypt(password),
                                             "display": "", **extra})

    def command(self, name: str, *args: Any) -> tuple[bool, Any]:
        return self.command_payload(command2code[name], encode(list(args)))

    def command_payload(self, code: int, payload: bytes) -> tuple[bool, Any]:
        self.sock.sendall(command_frame(code, payload))
        return self.reply()

    def reply(self) -> tuple[bool, Any]:
        ok, payload = read_reply(self.sock)
        return ok, (decode(payload) if payload else None)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until_closed(self, timeout: float = WAIT) -> bytes:
        """Everything the daemon sends until it closes the connection.

        Raises AssertionError if the connection is still open after *timeout*.
        """
        self.sock.settimeout(timeout)
        received = bytearray()
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return bytes(received)
                received += chunk
        except ConnectionResetError:
            return bytes(received)
        except TimeoutError:
            raise AssertionError(
                f"daemon did not close the connection within {timeout} s "
                f"(received {bytes(received)!r})") from None

    def is_closed(self, timeout: float = WAIT) -> bool:
        try:
            self.read_until_closed(timeout)
        except AssertionError:
            return False
        return True


def split_replies(data: bytes) -> list[tuple[bool, Any]]:
    """Parse a byte string of reply frames (as received before a close)."""
    replies: list[tuple[bool, Any]] = []
    pos = 0
    while pos < len(data):
        start = data[pos]
        if start == 0x06:
            replies.append((True, None))
            pos += 1
            continue
        assert start in (0x03, 0x15), f"bad reply start byte 0x{start:02x} in {data!r}"
        assert pos + 5 <= len(data), f"truncated reply header in {data!r}"
        length = int.from_bytes(data[pos + 1:pos + 5], "big")
        payload = data[pos + 5:pos + 5 + length]
        assert len(payload) == length, f"truncated reply payload in {data!r}"
        replies.append((start == 0x03, decode(payload) if payload else None))
        pos += 5 + length
    return replies


__all__ = ["Account", "DaemonProcess", "Event", "EventRecorder", "Gate", "RawConnection",
           "free_port", "make_idle", "split_replies", "write_config"]
