"""A real daemon process for the GUI tests.

Writes a TOML configuration into a directory, starts
``python -m nicos_daemon.main --config FILE`` on a free loopback port and
waits (on an Event set by a stdout reader thread, no polling) for the line
``... listening on HOST:PORT``.  The same object can be stopped and started
again on the same port (reconnect test).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nicos.clients.base import NicosClient

HOST = '127.0.0.1'
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
REPO_ROOT = Path(__file__).resolve().parents[2]
# test accounts: name -> (password, level)
PASSWORDS = {
    'admin': ('gui-Admin-Secret-7', 'admin'),
    'user': ('gui-User-Secret-7', 'user'),
    'guest': ('gui-Guest-Secret-7', 'guest'),
}


@dataclass(frozen=True)
class Account:
    name: str
    password: str
    level: str
    hash: str


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=True)  # a valid TOML basic string


class GuiDaemon:
    def __init__(self, workdir: Path, rsakey: Path, accounts: Iterable[Account],
                 **settings: Any) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.accounts = {a.name: a for a in accounts}
        self.port = free_port()
        self.config = self.workdir / 'daemon.toml'
        self.settings: dict[str, Any] = {
            'server': f'{HOST}:{self.port}',
            'authmethod': 'list',
            'setup': 'demo',
            'datadir': str(self.workdir / 'data'),
            'logdir': str(self.workdir / 'log'),
            'rsakey': str(rsakey),
            'updateinterval': 0.05,
            'maxlogins': 50,
            'throttle_failures': 100,
        }
        self.settings.update(settings)
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self._ready = threading.Event()

    def write_config(self) -> None:
        lines = [f'{key} = {_toml(value)}' for key, value in self.settings.items()]
        for account in self.accounts.values():
            lines += ['', f'[passwd.{json.dumps(account.name)}]',
                      f'hash = {_toml(account.hash)}', f'level = {_toml(account.level)}']
        self.config.write_text('\n'.join(lines) + '\n')

    def start(self) -> GuiDaemon:
        self.write_config()
        self._ready.clear()
        env = dict(os.environ)
        env.pop('PYTHONPATH', None)
        env.pop('QT_QPA_PLATFORM', None)
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'nicos_daemon.main', '--config', str(self.config)],
            cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, encoding='utf-8', errors='replace')
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        if not self._ready.wait(START_TIMEOUT) or not self.alive():
            self.kill()
            raise RuntimeError('daemon did not start:\n' + ''.join(self.output[-50:]))
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                self.output.append(line)
                if 'listening on' in line:
                    self._ready.set()
        finally:
            self._ready.set()  # also wakes start() when the process died

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)

    def client(self, user: str = 'admin') -> EventClient:
        """A plain library client that records events (set-up and cleanup)."""
        client = EventClient()
        client.connect(HOST, self.port, user, self.accounts[user].password, timeout=30)
        return client

    def make_idle(self, timeout: float = 15.0) -> None:
        """Empty queue, no script running, no watches (cleanup between tests)."""
        client = self.client()
        try:
            client.ask('unqueue', '*')
            if client.ask('getstatus')['status'][0] >= 0:
                try:
                    client.ask('stop', 5)
                except Exception:  # noqa: BLE001 - it may have ended meanwhile
                    pass
                client.wait_for('status', lambda data: data[0] < 0, timeout,
                                already=lambda: client.ask('getstatus')['status'][0] < 0)
            watches = list(client.ask('getstatus')['watch'])
            if watches:
                client.ask('unwatch', watches)
        finally:
            client.disconnect()


class EventClient(NicosClient):
    """NicosClient keeping its events; wait_for() blocks on a condition."""

    def __init__(self) -> None:
        super().__init__()
        self.cond = threading.Condition()
        self.events: list[tuple[str, Any]] = []

    def signal(self, name: str, *args: Any) -> None:
        with self.cond:
            self.events.append((name, args[0] if args else None))
            self.cond.notify_all()

    def wait_for(self, name: str, predicate: Any, timeout: float,
                 already: Any = None) -> None:
        """Until an event *name* with predicate(data) true has arrived since
        the connect, or *already()* is true; AssertionError on timeout."""
        if already is not None and already():
            return

        def found() -> bool:
            return any(event == name and predicate(data) for event, data in self.events)

        with self.cond:
            if not self.cond.wait_for(found, timeout):
                raise AssertionError(f'no matching {name} event within {timeout} s')


def gate_loop(path: Path) -> str:
    """Two script lines (one top-level statement) that wait until *path* exists;
    they sleep in short steps, so break and stop reach them at once."""
    return (f"while not __import__('os').path.exists({str(path)!r}):\n"
            f"    sleep(0.01)\n")
