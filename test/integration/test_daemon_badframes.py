"""Malformed input on raw sockets, while a logged-in client keeps working."""

from __future__ import annotations

import json
import os
import pickle
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemonproc import DaemonProcess, EventRecorder, RawConnection, split_replies

from nicos.protocols.daemon import command2code
from nicos.protocols.daemon.framing import ConnectionClosed, command_frame, encode_command


class _Touch:
    """Unpickling this runs ``os.system('touch <path>')``: proof of unpickling."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.path}",))


def pickle_payload(path: Path) -> bytes:
    """A JSON argument list with an object that upstream JSON peers would unpickle."""
    text = pickle.dumps(_Touch(path), 2).decode("latin1")
    return json.dumps([{"__pickle__": text}]).encode()


@pytest.fixture()
def witness(connect: Callable[..., EventRecorder],
            daemon: DaemonProcess) -> Iterator[EventRecorder]:
    """A logged-in client that must keep working whatever the raw socket does; checked
    after every test."""
    client = connect("user")
    assert client.ask("getversion") == client.banner["daemon_version"]
    yield client
    assert daemon.alive(), "the daemon died"
    assert client.connected, "the other client lost its connection"
    assert client.ask("getversion") == client.banner["daemon_version"]
    assert client.ask("getstatus")["status"][0] in (-1, -2)
    # and new logins still work
    fresh = connect("guest")
    assert fresh.ask("getversion") == client.banner["daemon_version"]


def logged_in(daemon: DaemonProcess) -> RawConnection:
    conn = daemon.raw()
    account = daemon.accounts["user"]
    ok, reply = conn.login(account.name, account.password)
    assert ok and reply == {"user_level": 10}, reply
    return conn


def assert_closed_without_success(conn: RawConnection) -> list:
    """The daemon closes the connection; whatever it sent before are error replies."""
    replies = split_replies(conn.read_until_closed())
    assert all(not ok for ok, _ in replies), replies
    return replies


def assert_refused_and_not_out_of_step(conn: RawConnection, version: str) -> None:
    """An error reply first; then the connection is either closed, or still in step
    (the next command gets its own, correct reply)."""
    ok, reason = conn.reply()
    assert not ok and isinstance(reason, str), (ok, reason)
    try:
        conn.send(encode_command("getversion", []))
        ok, reply = conn.reply()
    except (ConnectionClosed, BrokenPipeError, ConnectionResetError):
        return  # closed after the error reply, as upstream does
    assert (ok, reply) == (True, version)


# -- before login ----------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00" * 64,
    b"\xff" * 7,
], ids=["http", "zeros", "ff"])
def test_garbage_before_the_id_and_banner(daemon: DaemonProcess, witness: EventRecorder,
                                          data: bytes) -> None:
    # The first 16 bytes are taken as the client id; the rest is a bad frame.
    with daemon.raw() as conn:
        conn.send(data[:16].ljust(16, b"\0"))
        ok, banner = conn.reply()
        assert ok and isinstance(banner, dict)
        conn.send(data)
        assert_closed_without_success(conn)


def test_garbage_instead_of_login(daemon: DaemonProcess, witness: EventRecorder) -> None:
    with daemon.raw() as conn:
        conn.hello()
        conn.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(200))  # TLS
        assert_closed_without_success(conn)


def test_oversize_login_frame(daemon: DaemonProcess, witness: EventRecorder) -> None:
    with daemon.raw() as conn:
        conn.hello()
        conn.send(struct.pack(">cHI", b"\x05", command2code["authenticate"], 0xFFFFFFF0))
        assert_closed_without_success(conn)


def test_pickle_in_authenticate_is_never_unpickled(daemon: DaemonProcess,
                                                   witness: EventRecorder,
                                                   tmp_path: Path) -> None:
    marker = tmp_path / "unpickled-at-login"
    with daemon.raw() as conn:
        conn.hello()
        conn.send(command_frame(command2code["authenticate"], pickle_payload(marker)))
        assert_closed_without_success(conn)
    assert not marker.exists(), "the daemon unpickled data from an unauthenticated client"


def test_truncated_frame_then_close(daemon: DaemonProcess, witness: EventRecorder) -> None:
    with daemon.raw() as conn:
        conn.hello()
        conn.send(struct.pack(">cHI", b"\x05", command2code["authenticate"], 100) + b"[{")
    # and once more after login
    conn = logged_in(daemon)
    conn.send(struct.pack(">cHI", b"\x05", command2code["getstatus"], 50) + b"[")
    conn.close()


def test_short_client_id_then_close(daemon: DaemonProcess, witness: EventRecorder) -> None:
    with daemon.raw() as conn:
        conn.send(b"12345")


# -- after login ---------------------------------------------------------------------------


def test_garbage_after_login(daemon: DaemonProcess, witness: EventRecorder) -> None:
    with logged_in(daemon) as conn:
        conn.send(b"this is not a frame\r\n")
        assert_closed_without_success(conn)


def test_oversize_length_field(daemon: DaemonProcess, witness: EventRecorder) -> None:
    with logged_in(daemon) as conn:
        # 4 GiB announced: the daemon must refuse at once instead of waiting for it.
        conn.send(struct.pack(">cHI", b"\x05", command2code["getversion"], 0xFFFFFFFF))
        assert_closed_without_success(conn)


def test_unknown_command_code(daemon: DaemonProcess, witness: EventRecorder) -> None:
    with logged_in(daemon) as conn:
        conn.send(command_frame(0x7777, b"[]"))
        assert_refused_and_not_out_of_step(conn, witness.banner["daemon_version"])


def test_pickle_payload_after_login(daemon: DaemonProcess, witness: EventRecorder,
                                    tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    with logged_in(daemon) as conn:
        conn.send(command_frame(command2code["eval"], pickle_payload(marker)))
        assert_refused_and_not_out_of_step(conn, witness.banner["daemon_version"])
    assert not marker.exists(), "the daemon unpickled client data"


def test_pickle_disguised_as_transfer(daemon: DaemonProcess, witness: EventRecorder,
                                      tmp_path: Path) -> None:
    # transfer is the one command that accepts the upstream pickle of raw bytes;
    # any other pickle there must be refused too.
    marker = tmp_path / "unpickled-transfer"
    with logged_in(daemon) as conn:
        conn.send(command_frame(command2code["transfer"], pickle_payload(marker)))
        assert_refused_and_not_out_of_step(conn, witness.banner["daemon_version"])
    assert not marker.exists(), "the daemon unpickled client data"


@pytest.mark.parametrize("payload", [
    b'["\xff\xfe invalid utf-8"]',
    b"\xef\xbb\xbf[]",  # byte-order mark
    b"[1, 2",  # truncated JSON
    b'{"not": "a list"}',
    b"[" * 100_000,  # nesting bomb
], ids=["non-utf8", "bom", "truncated-json", "object", "nesting"])
def test_undecodable_payload(daemon: DaemonProcess, witness: EventRecorder,
                             payload: bytes) -> None:
    with logged_in(daemon) as conn:
        conn.send(command_frame(command2code["getstatus"], payload))
        assert_refused_and_not_out_of_step(conn, witness.banner["daemon_version"])


@pytest.mark.parametrize("name, args", [
    ("queue", [1, 2]),
    ("eval", ["1+1", "yes"]),
    ("break", ["2"]),
    ("watch", ["not a list"]),
    ("getmessages", [{"n": 1}]),
])
def test_wrong_argument_types(daemon: DaemonProcess, witness: EventRecorder,
                              name: str, args: list) -> None:
    with logged_in(daemon) as conn:
        ok, reason = conn.command(name, *args)
        assert not ok and isinstance(reason, str)
        ok, version = conn.command("getversion")
        assert ok and version == witness.banner["daemon_version"]


def test_flood_of_small_commands_then_close(daemon: DaemonProcess,
                                            witness: EventRecorder) -> None:
    # Many commands without reading any reply, then an abrupt close.
    with logged_in(daemon) as conn:
        conn.send(encode_command("getstatus", []) * 2000)


def test_event_connection_without_login_gets_no_events(
        daemon: DaemonProcess, witness: EventRecorder) -> None:
    # A second connection with the id of a control connection that has not logged in
    # must not become its event stream (protocol reference §11.3).
    with daemon.raw() as control:
        control.hello()
        with RawConnection(daemon.host, daemon.port) as events:
            events.send(control.client_id)
            since = witness.mark()
            reqid = witness.run("print('secret output')")
            witness.wait_done(reqid, since=since)
            # Closed at once (or, taken for a new control connection, after a banner and
            # the login timeout); event frames would keep it open.
            data = events.read_until_closed(timeout=30)
            assert b"secret output" not in data
            if data:
                length = int.from_bytes(data[1:5], "big")
                assert len(data) == 5 + length, data
                ok, banner = split_replies(data)[0]
                assert ok and "protocol_version" in banner, data
