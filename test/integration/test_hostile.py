"""Hostile clients against a real daemon process: slow-loris, half-open connections,
floods of connections before login, and oversize input; and insecure settings
(authmethod none off loopback, users without a password) that must stop the start.

Two daemons: ``quick`` has a short login timeout (1 s), so that tests can see stalled
handshakes dropped; ``patient`` has a long one (60 s), so that a connection closed
within the tests' wait guard (10 s) was closed for another reason than the timeout.
The connection tests also check that a well-behaved client can log in and work meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonproc import (
    WAIT,
    Account,
    DaemonProcess,
    EventRecorder,
    Gate,
    RawConnection,
    make_idle,
)

from nicos.protocols.daemon import CLIENT_ID_LEN, command2code
from nicos.protocols.daemon.framing import FrameTooLarge, command_frame, encode_command

QUICK_LOGIN_TIMEOUT = 1.0
PATIENT_LOGIN_TIMEOUT = 60.0
PENDING_PER_HOST = 8  # docs/daemon.md, "Hostile input and limits"
PENDING_TOTAL = 64
TCP_REPAIR = 19  # linux/tcp.h


@pytest.fixture(scope="module")
def quick(new_daemon: Callable[..., DaemonProcess]) -> Iterator[DaemonProcess]:
    daemon = new_daemon("hostile-quick", login_timeout=QUICK_LOGIN_TIMEOUT)
    yield daemon
    assert daemon.alive(), daemon.diagnostics()
    daemon.stop_and_check()


@pytest.fixture(scope="module")
def patient(new_daemon: Callable[..., DaemonProcess]) -> Iterator[DaemonProcess]:
    daemon = new_daemon("hostile-patient", login_timeout=PATIENT_LOGIN_TIMEOUT)
    yield daemon
    assert daemon.alive(), daemon.diagnostics()
    daemon.stop_and_check()


def works(daemon: DaemonProcess, user: str = "user") -> None:
    """A well-behaved client logs in and gets answers."""
    client = daemon.connect(user)
    try:
        assert client.ask("getversion") == client.banner["daemon_version"]
        assert client.ask("getstatus")["status"][0] in (-1, -2)
    finally:
        client.disconnect()


class Conn(RawConnection):
    """A raw control connection from a chosen loopback source address."""

    def __init__(self, daemon: DaemonProcess, source: str = "127.0.0.1",
                 timeout: float = WAIT) -> None:
        self.daemon = daemon
        self.source = source
        self.sock = _connect(daemon, source, timeout)
        self.client_id = os.urandom(CLIENT_ID_LEN)
        self.banner = None
        self.events: socket.socket | None = None

    def log_in(self, user: str = "user") -> Conn:
        account = self.daemon.accounts[user]
        ok, reply = self.login(account.name, account.password)
        assert ok and reply["user_level"] == account.level_number, reply
        return self

    def open_events(self) -> socket.socket:
        self.events = _connect(self.daemon, self.source, WAIT)
        self.events.sendall(self.client_id)
        return self.events

    def close(self) -> None:
        super().close()
        if self.events is not None:
            self.events.close()


def _connect(daemon: DaemonProcess, source: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((source, 0))
    sock.connect((daemon.host, daemon.port))
    return sock


def refused_at_once(conn: Conn) -> bool:
    """Closed by the daemon without a byte (a refused connection); raises if the
    connection is still open after the wait guard."""
    with conn:
        return conn.read_until_closed() == b""


def log_in_eventually(daemon: DaemonProcess, source: str, attempts: int = 1000) -> Conn:
    """Log in from ``source`` once the daemon has noticed that the connections blocking
    it are gone; each refused attempt ends with the daemon's close (an event)."""
    for _ in range(attempts):
        conn = Conn(daemon, source)
        conn.sock.sendall(conn.client_id)
        try:
            first = conn.sock.recv(1, socket.MSG_PEEK)
        except ConnectionResetError:
            first = b""
        if first:
            ok, banner = conn.reply()
            assert ok, banner
            conn.banner = banner
            return conn.log_in()
        conn.close()
    raise AssertionError(f"no login from {source} after {attempts} attempts")


def closed_while_dripping(sock: socket.socket, data: bytes, step_wait: float) -> int:
    """Send ``data`` one byte at a time; after each byte wait up to ``step_wait`` for the
    daemon to close the connection. Returns how many bytes were sent before the close,
    or -1 if all of it went out and the connection stayed open."""
    for count in range(len(data)):
        try:
            sock.sendall(data[count:count + 1])
        except (BrokenPipeError, ConnectionResetError):
            return count
        readable, _, _ = select.select([sock], [], [], step_wait)
        if readable:
            try:
                chunk = sock.recv(65536, socket.MSG_PEEK)
            except ConnectionResetError:
                return count + 1
            if not chunk:
                return count + 1
            sock.recv(len(chunk))  # the banner: go on dripping
    return -1


# -- slow-loris ------------------------------------------------------------------------------


def test_slow_loris_id_is_dropped_after_the_login_timeout(quick: DaemonProcess) -> None:
    stalled = []
    for _ in range(PENDING_PER_HOST - 1):  # as many as one host may have
        conn = Conn(quick)
        for byte in conn.client_id[:9]:  # byte by byte, then nothing
            conn.sock.sendall(bytes([byte]))
        stalled.append(conn)
    try:
        works(quick)  # meanwhile others log in fine
        for conn in stalled:
            assert conn.read_until_closed(QUICK_LOGIN_TIMEOUT + WAIT) == b"", \
                "a stalled id got an answer"
        works(quick)
    finally:
        for conn in stalled:
            conn.close()


@pytest.mark.parametrize("phase", ["id", "login"])
def test_dripping_cannot_stretch_the_handshake(quick: DaemonProcess, phase: str) -> None:
    """One deadline for the whole handshake: a byte every 0.2 s keeps no connection
    alive (the whole login would take minutes at that pace)."""
    with Conn(quick) as conn:
        if phase == "id":
            data = conn.client_id
        else:
            conn.hello()
            data = encode_command("authenticate", [{"login": "user", "passwd": "RSA:" + "A" * 344,
                                                    "display": ""}])
        sent = closed_while_dripping(conn.sock, data, step_wait=0.2)
        works(quick)
        assert sent != -1, f"the daemon let a {len(data)}-byte drip complete"
        assert sent < len(data)


# -- half-open connections --------------------------------------------------------------------


@pytest.mark.parametrize("where", ["no id", "half an id", "after the id", "half a login"])
def test_half_closed_before_login_is_dropped_at_once(patient: DaemonProcess,
                                                     where: str) -> None:
    """The client shuts down its sending side (FIN) mid-handshake: the daemon notices
    the end of stream and closes, without waiting for the (60 s) login timeout."""
    with Conn(patient) as conn:
        if where == "half an id":
            conn.send(conn.client_id[:7])
        elif where == "after the id":
            conn.send(conn.client_id)
        elif where == "half a login":
            conn.hello()
            conn.send(encode_command("authenticate", [{"login": "x", "passwd": "y"}])[:20])
        conn.sock.shutdown(socket.SHUT_WR)
        data = conn.read_until_closed(WAIT)  # raises if still open
        if where in ("after the id", "half a login"):
            assert data == b"" or data[0] in (0x03, 0x15)  # at most the banner / a NAK
        else:
            assert data == b""
    works(patient)


def test_half_closed_after_login_ends_both_connections(patient: DaemonProcess) -> None:
    with Conn(patient) as conn:
        conn.log_in("admin")
        events = conn.open_events()
        # An event that only a logged-in client gets (an empty "blocked"): once a byte
        # of it arrives, the event connection is attached to this client.
        assert conn.command("unqueue", "*")[0]
        events.settimeout(WAIT)
        assert events.recv(1), "no event arrived"
        conn.sock.shutdown(socket.SHUT_WR)
        assert conn.read_until_closed(WAIT) == b""
        with contextlib.suppress(ConnectionResetError):
            while events.recv(65536):
                pass  # events sent before the end, then EOF; raises if it stays open
    works(patient)


def test_event_connection_after_its_client_ended_is_closed(patient: DaemonProcess) -> None:
    """The control connection ends before the event connection arrives: the late
    event connection is closed without a byte, not greeted as a new control
    connection (a banner on an event socket would garble the client's event stream)."""
    with Conn(patient) as conn:
        conn.log_in()
        conn.sock.shutdown(socket.SHUT_WR)
        assert conn.read_until_closed(WAIT) == b""
        events = conn.open_events()
        events.settimeout(WAIT)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := events.recv(65536):  # raises TimeoutError if it stays open
                received += chunk
        assert received == b""
    works(patient)


def _vanish(sock: socket.socket) -> None:
    """Close without FIN or RST, as if the client's machine had lost power."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    sock.close()


def _can_vanish() -> bool:
    with socket.socket() as probe:
        try:
            probe.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
        except OSError:
            return False
    return True


@pytest.mark.skipif(not _can_vanish(), reason="TCP_REPAIR needs CAP_NET_ADMIN")
def test_vanished_peers_before_login_free_their_slots(quick: DaemonProcess) -> None:
    """Clients that disappear silently mid-handshake (true half-open connections) use
    up their host's pre-login slots only until the login timeout."""
    source = "127.0.0.5"
    for _ in range(PENDING_PER_HOST):
        conn = Conn(quick, source)
        conn.send(conn.client_id[:5])
        _vanish(conn.sock)
    # the host is at its limit now ...
    assert refused_at_once(Conn(quick, source))
    works(quick)  # ... and other hosts are not affected
    # A probe accepted after them times out after them: once the daemon has closed it,
    # the vanished ones have timed out too.
    with Conn(quick) as probe:
        probe.read_until_closed(QUICK_LOGIN_TIMEOUT + WAIT)
    log_in_eventually(quick, source).close()


def _daemon_side_socket(daemon: DaemonProcess, peer: socket.socket) -> str:
    """The daemon's end of ``peer`` as ``ss -tno`` shows it, once nothing is in flight
    (the timer column shows a retransmission timer while data awaits its ACK)."""
    host, port = peer.getsockname()[:2]
    line = ""
    for _ in range(200):  # an ACK is at most a delayed-ACK interval (40 ms) away
        out = subprocess.run(
            ["ss", "-tnoH", "state", "established",
             f"( sport = :{daemon.port} and dst {host} and dport = :{port} )"],
            capture_output=True, text=True, timeout=WAIT, check=True)
        lines = [text for text in out.stdout.splitlines() if text.strip()]
        assert len(lines) == 1, lines
        line = lines[0]
        if line.split()[1] == "0":  # Send-Q
            return line
    raise AssertionError(f"data stays in flight: {line}")


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_logged_in_connections_detect_vanished_peers(patient: DaemonProcess) -> None:
    """After the login there is no read timeout (clients may idle for hours), so only
    TCP keepalive notices a client whose machine vanished without FIN or RST: both
    sockets must have the keepalive timer running."""
    with Conn(patient) as conn:
        conn.log_in("admin")
        events = conn.open_events()
        assert conn.command("unqueue", "*")[0]  # an event: see the test above
        events.settimeout(WAIT)
        assert events.recv(1), "no event arrived"
        for sock in (conn.sock, events):
            line = _daemon_side_socket(patient, sock)
            assert "timer:(keepalive" in line, line


# -- connections before login are limited ----------------------------------------------------


def test_pre_login_connections_are_limited_per_host(patient: DaemonProcess) -> None:
    source = "127.0.0.2"
    waiting = [Conn(patient, source) for _ in range(PENDING_PER_HOST)]
    try:
        extra = Conn(patient, source)
        assert refused_at_once(extra), "a connection over the per-host limit was accepted"
        works(patient)  # other hosts log in fine
        # those within the limit are still served
        waiting[0].hello()
        waiting[0].log_in()
        assert waiting[0].command("getversion")[0]
    finally:
        for conn in waiting:
            conn.close()
    log_in_eventually(patient, source).close()


def test_pre_login_connections_are_limited_in_total(patient: DaemonProcess) -> None:
    hosts = [f"127.0.1.{index}" for index in range(1, PENDING_TOTAL // PENDING_PER_HOST + 1)]
    waiting = [Conn(patient, host) for host in hosts for _ in range(PENDING_PER_HOST)]
    try:
        assert refused_at_once(Conn(patient, "127.0.2.1")), \
            "a connection over the total limit was accepted"
    finally:
        for conn in waiting:
            conn.close()
    log_in_eventually(patient, "127.0.2.1").close()
    works(patient)


# -- oversize anything is refused with a reason -----------------------------------------------


def nak_then_closed(conn: Conn) -> str:
    ok, reason = conn.reply()
    assert not ok and isinstance(reason, str) and reason, (ok, reason)
    conn.read_until_closed(WAIT)
    return reason


def test_oversize_login_frame_is_refused_with_a_reason(patient: DaemonProcess) -> None:
    with Conn(patient) as conn:
        conn.hello()
        conn.send(struct.pack(">cHI", b"\x05", command2code["authenticate"], 1 << 20))
        reason = nak_then_closed(conn)
        assert "exceeds the limit" in reason
    works(patient)


@pytest.mark.parametrize("announced", [17 * 1024 * 1024, 0xFFFFFFFF])
def test_oversize_command_is_refused_with_a_reason(patient: DaemonProcess,
                                                    announced: int) -> None:
    with Conn(patient) as conn:
        conn.log_in()
        conn.send(struct.pack(">cHI", b"\x05", command2code["queue"], announced) + b"[")
        reason = nak_then_closed(conn)
        assert f"command payload of {announced} bytes exceeds the limit" in reason
    works(patient)


def test_oversize_login_name_is_refused_with_a_reason(patient: DaemonProcess) -> None:
    with Conn(patient) as conn:
        conn.hello()
        ok, reason = conn.command("authenticate", {"login": "u" * 5000,
                                                   "passwd": conn.encrypt("x"), "display": ""})
        assert not ok and reason == "invalid credentials"
        conn.read_until_closed(WAIT)
    works(patient)


@pytest.fixture()
def admin(patient: DaemonProcess) -> Iterator[EventRecorder]:
    client = patient.connect("admin")
    yield client
    make_idle(client)
    client.disconnect()


def refusal(client: EventRecorder, command: str, *args: Any) -> str:
    from nicos.clients.base import DaemonError

    with pytest.raises(DaemonError) as info:
        client.ask(command, *args)
    assert client.connected
    return str(info.value)


def test_oversize_script_is_refused_with_a_reason(admin: EventRecorder) -> None:
    reason = refusal(admin, "queue", "big.py", "x = 1\n" * 800_000)  # 4.8 M characters
    assert "script too long" in reason and "limit" in reason


def test_too_many_watch_expressions_are_refused_with_a_reason(admin: EventRecorder) -> None:
    try:
        reason = refusal(admin, "watch", [f"{index}:hostile" for index in range(201)])
        assert "too many watch expressions" in reason
    finally:
        admin.ask("unwatch", ["*:hostile"])


def test_oversize_list_arguments_are_refused_with_a_reason(admin: EventRecorder) -> None:
    reason = refusal(admin, "eventmask", ["message"] * 10_001)
    assert "eventmask" in reason or "names" in reason


def test_full_queue_is_refused_with_a_reason(admin: EventRecorder, gates: Callable[[], Gate]
                                             ) -> None:
    gate = gates()
    admin.ask("queue", "block", gate.wait_code())
    try:
        for index in range(1000):
            admin.ask("queue", "", f"x = {index}")
        reason = refusal(admin, "queue", "", "x = 'one too many'")
        assert "queue is full" in reason
    finally:
        admin.ask("unqueue", "*")
        gate.open()


def test_oversize_reply_is_refused_with_a_reason(patient: DaemonProcess) -> None:
    """A result larger than clients accept (MAX_REPLY_PAYLOAD, 64 MiB) is refused
    with the reason instead of sent; the connection stays usable."""
    with Conn(patient) as conn:
        conn.log_in()
        conn.send(encode_command("eval", ["'x' * (65 * 1024 * 1024)", False]))
        try:
            ok, reason = conn.reply()
        except FrameTooLarge as err:
            pytest.fail(f"the daemon sent an oversize reply: {err}")
        assert not ok and "limit" in reason
        assert conn.command("getversion")[0]
    works(patient)


def test_flood_of_commands_without_reading_replies(patient: DaemonProcess) -> None:
    """A client that sends and never reads: the daemon stops reading when its replies
    back up (TCP flow control) instead of buffering them; others are unaffected."""
    with Conn(patient) as conn:
        conn.log_in()
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        batch = command_frame(command2code["getstatus"], b"[]") * 1000
        conn.sock.settimeout(1.0)
        limit = 10_000  # 70 MB of commands; kernel buffers hold a few MB
        sent = 0
        with contextlib.suppress(TimeoutError):
            while sent < limit:  # until our send buffer is full too
                conn.sock.sendall(batch)
                sent += 1
        assert sent < limit, "the daemon read 10 million commands without replying"
        works(patient)


# -- insecure settings refuse the start unless explicitly overridden --------------------------

KIOSK = Account("kiosk", "", "guest", "")  # a user without a password: hash = ""


def _refused_start(daemon: DaemonProcess) -> str:
    """Start must fail with a configuration error (exit code 2); returns stderr."""
    with pytest.raises(RuntimeError, match="exited with code 2"):
        daemon.start()
    return daemon.stderr_path.read_text(errors="replace")


def test_user_without_password_refuses_the_start(tmp_path: Path, rsa_key_file: Path,
                                                 accounts: dict[str, Account]) -> None:
    daemon = DaemonProcess(tmp_path, rsa_key_file, [accounts["admin"], KIOSK])
    stderr = _refused_start(daemon)
    assert "passwd.kiosk.hash" in stderr and "allow_weak_passwords = true" in stderr


def test_authmethod_none_off_loopback_refuses_the_start(tmp_path: Path, rsa_key_file: Path
                                                        ) -> None:
    daemon = DaemonProcess(tmp_path, rsa_key_file, [], authmethod="none",
                           server="0.0.0.0:0")
    stderr = _refused_start(daemon)
    assert "authmethod 'none'" in stderr and "allow_insecure = true" in stderr


def test_user_without_password_with_the_override(tmp_path: Path, rsa_key_file: Path,
                                                 accounts: dict[str, Account]) -> None:
    daemon = DaemonProcess(tmp_path, rsa_key_file, [*accounts.values(), KIOSK],
                           allow_weak_passwords=True)
    daemon.start()
    try:
        assert "user 'kiosk' has no password" in daemon.stderr_path.read_text()
        with Conn(daemon) as conn:
            ok, reply = conn.login("kiosk", "")
            assert ok and reply == {"user_level": 0}, reply
            assert conn.command("getversion")[0]
        # only the empty password: upstream would take any password here
        with Conn(daemon) as conn:
            ok, reason = conn.login("kiosk", "anything")
            assert not ok and reason == "Invalid username or password!"
        works(daemon)  # the others log in as before
    finally:
        daemon.stop_and_check()
