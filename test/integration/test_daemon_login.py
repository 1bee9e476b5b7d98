"""Login handshake against a real daemon: banner, levels, refusals, throttle, restart."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest
import rsa
from daemonproc import DaemonProcess, EventRecorder, RawConnection, split_replies

from nicos.clients.base import LoginFailed
from nicos.protocols.daemon.framing import encode_command

INVALID = "Invalid username or password!"


@pytest.mark.parametrize("user, level", [("admin", 20), ("user", 10), ("guest", 0)])
def test_login_levels(connect: Callable[..., EventRecorder], user: str, level: int) -> None:
    client = connect(user)
    assert client.connected
    assert client.user_level == level
    assert client.ask("getversion") == client.banner["daemon_version"]


def test_banner(daemon: DaemonProcess, rsa_key_file: Path) -> None:
    with daemon.raw() as conn:
        banner = conn.hello()
    assert banner["protocol_version"] == 24
    assert isinstance(banner["daemon_version"], str) and banner["daemon_version"]
    assert banner["serializer"] == "json"
    assert banner["pw_hashing"].startswith("rsa,")
    assert isinstance(banner["rsakey"], str)
    public = rsa.PublicKey.load_pkcs1(base64.b64decode(banner["rsakey"]))
    private = rsa.PrivateKey.load_pkcs1(rsa_key_file.read_bytes())
    # The daemon uses the configured key file, not a key of its own.
    assert (public.n, public.e) == (private.n, private.e)
    assert public.n.bit_length() >= 2048
    for key in ("custom_version", "nicos_root", "custom_path"):
        if key in banner:
            assert isinstance(banner[key], str), (key, banner[key])


@pytest.mark.parametrize("user, password", [
    ("admin", "wrong-password-1"),
    ("nosuchuser", "whatever-password"),
    ("user", "admin-Secret-42"),  # another user's password
])
def test_login_refused(daemon: DaemonProcess, user: str, password: str) -> None:
    client = EventRecorder()
    with pytest.raises(LoginFailed) as info:
        client.connect(daemon.host, daemon.port, user, password, timeout=30)
    assert str(info.value) == INVALID
    assert not client.connected


def test_refused_login_closes_connection(daemon: DaemonProcess) -> None:
    with daemon.raw() as conn:
        ok, reason = conn.login("admin", "wrong-password-2")
        assert (ok, reason) == (False, INVALID)
        assert conn.is_closed()


def test_plain_text_password_refused(daemon: DaemonProcess) -> None:
    with daemon.raw() as conn:
        conn.hello()
        ok, reason = conn.command("authenticate", {
            "login": "admin", "passwd": daemon.accounts["admin"].password, "display": ""})
        assert not ok, "a plain-text password was accepted"
        assert isinstance(reason, str)
        assert conn.is_closed()


@pytest.mark.parametrize("first", [("getversion",), ("getstatus",), ("eval", "1+1", False)])
def test_command_before_login_refused(daemon: DaemonProcess, first: tuple) -> None:
    with daemon.raw() as conn:
        conn.hello()
        conn.send(conn_frame(*first))
        replies = split_replies(conn.read_until_closed())
        assert replies, "connection closed without a reply"
        assert all(not ok for ok, _ in replies), replies


def conn_frame(name: str, *args: object) -> bytes:
    return encode_command(name, args)


def test_authenticate_twice_is_refused(daemon: DaemonProcess) -> None:
    account = daemon.accounts["user"]
    with daemon.raw() as conn:
        ok, reply = conn.login(account.name, account.password)
        assert ok and reply == {"user_level": 10}
        conn.send(conn_frame("authenticate", {"login": "admin",
                                              "passwd": conn.encrypt("admin-Secret-42"),
                                              "display": ""}))
        # Upstream closes without a reply; an error reply before closing is fine too,
        # but never a second successful login.
        assert all(not ok for ok, _ in split_replies(conn.read_until_closed()))


def test_login_is_stripped_of_blanks(daemon: DaemonProcess) -> None:
    account = daemon.accounts["user"]
    client = EventRecorder()
    client.connect(daemon.host, daemon.port, f"  {account.name} ", account.password,
                   timeout=30)
    try:
        assert client.user_level == 10
    finally:
        client.disconnect()


def test_silent_connection_does_not_block_logins(daemon: DaemonProcess,
                                                 connect: Callable[..., EventRecorder]) -> None:
    # A peer that connects and sends nothing must not hold up the accept path.
    with RawConnection(daemon.host, daemon.port):
        client = connect("guest")
        assert client.ask("getversion")


def test_throttle_refuses_correct_password_after_failures(
        new_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = new_daemon("throttle", throttle_failures=2, throttle_window=600)
    for _ in range(2):
        with pytest.raises(LoginFailed):
            daemon.connect("admin", password="wrong-password-3")
    # The window is full: even the right password is refused now.
    with pytest.raises(LoginFailed):
        daemon.connect("admin")
    daemon.stop_and_check()


def test_maxlogins(new_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = new_daemon("maxlogins", maxlogins=2)
    first = daemon.raw()
    account = daemon.accounts["user"]
    assert first.login(account.name, account.password)[0]
    second = daemon.connect("guest")
    with pytest.raises(LoginFailed, match="too many"):
        daemon.connect("admin")
    assert second.ask("getversion")
    # The first logs out (quit is answered, then the daemon closes): room again.
    assert first.command("quit") == (True, None)
    assert first.is_closed()
    first.close()
    third = None
    for _ in range(10):  # the slot is freed just after the socket is closed
        try:
            third = daemon.connect("admin")
            break
        except LoginFailed:
            continue
    assert third is not None, "no room after a client logged out"
    third.disconnect()
    second.disconnect()
    daemon.stop_and_check()
