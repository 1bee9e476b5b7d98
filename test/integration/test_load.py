"""Load: 50 clients on one daemon while a script prints 10,000 lines.

- 49 clients read their event connections: each gets every line, in order, and stays
  connected and usable;
- 1 client stops reading its event connection (and never reads its control
  connection): the daemon drops it when its event queue overflows, and the others
  are not held up;
- the daemon's memory (RSS, sampled with psutil or /proc) stays bounded.

The kernel's socket buffers take up to about 4 MB of events for the stalled client
before the daemon's queue for it grows at all. So that it overflows within this run,
the lines are long (about 1 KB) and the daemon runs with ``event_queue_limit = 2500``
instead of the default 10,000 (10,000 lines could never overflow 10,000 places). A
healthy reader stays far below the limit: its kernel buffers take the whole stream.

The readers do not decode events: one thread reads all 49 event sockets (select) and
scans each chunk for the line marks, so that the test process is never the
bottleneck and keeps no stream in memory. No timing is asserted.
"""

from __future__ import annotations

import re
import selectors
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemonproc import WAIT, DaemonProcess, RawConnection

CLIENTS = 50
LINES = 10_000
QUEUE_LIMIT = 2500
RSS_BOUND = 256 * 1024 * 1024  # a correctness bound (it peaks near 80 MiB), not a target
PADDING = 1000  # characters per line after the number
END_MARK = b"load-run-finished"
SCRIPT = f"""\
pad = '.' * {PADDING}
for i in range({LINES}):
    print('load-line %05d ' % i + pad)
print('load-run' + '-finished')
"""
LINE = re.compile(rb"load-line (\d{5}) ")
RUN_GUARD = 180.0  # seconds: the whole run must be over long before


def rss_of(pid: int) -> int:
    try:
        import psutil
    except ImportError:  # psutil is in the bench extra; /proc works on Linux anyway
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS") from None
    return int(psutil.Process(pid).memory_info().rss)


class RssSampler(threading.Thread):
    """Peak RSS of the daemon while the load runs (a measurement, not a wait)."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.peak = rss_of(pid)
        self.samples = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.05):
            self.peak = max(self.peak, rss_of(self.pid))
            self.samples += 1

    def stop(self) -> int:
        self.halt.set()
        self.join(WAIT)
        self.peak = max(self.peak, rss_of(self.pid))
        return self.peak


class Client:
    """A raw login with its event connection."""

    def __init__(self, daemon: DaemonProcess, *, rcvbuf: int | None = None) -> None:
        self.control = RawConnection(daemon.host, daemon.port, timeout=WAIT * 3)
        account = daemon.accounts["user"]
        ok, reply = self.control.login(account.name, account.password)
        assert ok, reply
        self.events = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so that the window stays small
            self.events.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.events.settimeout(WAIT)
        self.events.connect((daemon.host, daemon.port))
        self.events.sendall(self.control.client_id)
        self.numbers: list[int] = []  # of the printed lines, in arrival order
        self.carry = b""  # unscanned end of the last chunk
        self.finished = False  # END_MARK seen
        self.closed = False  # the daemon closed the event connection

    def close(self) -> None:
        self.control.close()
        self.events.close()


class Collector(threading.Thread):
    """Moves whatever the event sockets have into each client's buffer, until every
    client has seen END_MARK or was closed."""

    def __init__(self, clients: list[Client]) -> None:
        super().__init__(name="collector", daemon=True)
        self.clients = clients
        self.done = threading.Event()
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            for client in self.clients:
                client.events.setblocking(False)
                selector.register(client.events, selectors.EVENT_READ, client)
            while not self.halt.is_set():
                for key, _ in selector.select(0.5):
                    client = key.data
                    try:
                        chunk = client.events.recv(1 << 20)
                    except BlockingIOError:
                        continue
                    except ConnectionResetError:
                        chunk = b""
                    if not chunk:
                        client.closed = True
                        selector.unregister(client.events)
                        continue
                    scan(client, chunk)
                if all(c.finished or c.closed for c in self.clients):
                    self.done.set()
                    return
        except BaseException as err:  # reported by the test
            self.error = err
            self.done.set()
        finally:
            selector.close()


def scan(client: Client, chunk: bytes) -> None:
    """Note the line numbers and the end mark in a chunk of the event stream; nothing
    is kept but a short carry-over for a mark cut in two."""
    data = client.carry + chunk
    end = 0
    for match in LINE.finditer(data):
        client.numbers.append(int(match.group(1)))
        end = match.end()
    if END_MARK in data:
        client.finished = True
    client.carry = data[max(end, len(data) - 32):]


@pytest.fixture(scope="module")
def daemon(new_daemon: Callable[..., DaemonProcess]) -> Iterator[DaemonProcess]:
    proc = new_daemon("load", maxlogins=CLIENTS + 10, event_queue_limit=QUEUE_LIMIT)
    yield proc
    assert proc.alive(), proc.diagnostics()
    proc.stop_and_check()


def overflow_lines(daemon: DaemonProcess) -> list[str]:
    found = []
    for logfile in Path(daemon.logdir).glob("daemon.log*"):
        found += [line for line in logfile.read_text(errors="replace").splitlines()
                  if "event queue overflow" in line and "disconnecting" in line]
    return found


def test_fifty_clients_one_stalled(daemon: DaemonProcess) -> None:
    readers: list[Client] = []
    stalled: Client | None = None
    collector: Collector | None = None
    try:
        for _ in range(CLIENTS - 1):
            readers.append(Client(daemon))
        stalled = Client(daemon, rcvbuf=4096)
        collector = Collector(readers)
        collector.start()
        sampler = RssSampler(daemon.proc.pid)  # type: ignore[union-attr]
        sampler.start()
        idle_rss = sampler.peak

        ok, reqid = readers[0].control.command("queue", "load.py", SCRIPT)
        assert ok, reqid

        # the stalled client is dropped: the daemon closes its control connection too
        stalled.control.read_until_closed(RUN_GUARD)  # raises if it stays open
        assert collector.done.wait(RUN_GUARD), "the readers did not all finish"
        peak = sampler.stop()
        assert collector.error is None, collector.error

        closed = [index for index, client in enumerate(readers) if client.closed]
        assert not closed, f"readers {closed} were disconnected"
        expected = list(range(LINES))
        for index, client in enumerate(readers):
            if client.numbers != expected:
                got = client.numbers
                first = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False))
                              if a != b), min(len(got), LINES))
                pytest.fail(f"reader {index}: {len(got)} lines, first difference at {first}")
        # they are still logged in and served
        for client in readers:
            ok, version = client.control.command("getversion")
            assert ok and isinstance(version, str)
        assert len(overflow_lines(daemon)) == 1, overflow_lines(daemon)
        assert peak < RSS_BOUND, f"daemon RSS peaked at {peak / 2**20:.0f} MiB " \
            f"(idle {idle_rss / 2**20:.0f} MiB)"
    finally:
        if collector is not None:
            collector.halt.set()
            collector.join(WAIT)
        for client in readers + ([stalled] if stalled is not None else []):
            client.close()


def test_daemon_is_idle_and_serves_new_clients_after_the_load(daemon: DaemonProcess) -> None:
    client = daemon.connect("admin")
    try:
        since = client.mark()
        status = client.ask("getstatus")
        if status["status"][0] not in (-1, -2):
            client.wait_for("status", lambda d: d[0] in (-1, -2), since=since)
        assert client.ask("getstatus")["requests"] == []
        reqid = client.run("print('after the load')")
        client.wait_done(reqid, since=since)
        assert any(m[3] == "after the load\n" for m in client.messages(since))
    finally:
        client.disconnect()



LOGINS = 40  # clients logged in at the same time
LOGIN_GROWTH_BOUND = 64 * 1024 * 1024


def test_memory_does_not_grow_with_concurrent_logins(
        new_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = new_daemon("logins", maxlogins=LOGINS + 10)
    clients: list[Client] = []
    try:
        for _ in range(2):  # the first allocations of a fresh process
            Client(daemon).close()
        before = rss_of(daemon.proc.pid)  # type: ignore[union-attr]
        for _ in range(LOGINS):
            clients.append(Client(daemon))
        for client in clients:
            assert client.control.command("getversion")[0]
        for client in clients:
            client.close()
        clients = []
        # logged out again: what stays is what the daemon keeps
        works = Client(daemon)
        clients.append(works)
        assert works.control.command("getversion")[0]
        after = rss_of(daemon.proc.pid)  # type: ignore[union-attr]
        assert after - before < LOGIN_GROWTH_BOUND, (
            f"RSS {before / 2**20:.0f} MiB -> {after / 2**20:.0f} MiB after {LOGINS} "
            "concurrent logins")
    finally:
        for client in clients:
            client.close()
        daemon.stop_and_check()
