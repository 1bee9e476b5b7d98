"""TLS on both connections, against real daemon processes with throw-away certificates.

The certificates are made with the openssl command line (see tlscerts.py); without
openssl every test here is skipped with a loud reason. Nothing sleeps: tests wait for
events, replies or the daemon closing a connection, each with a generous guard.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonproc import (
    IDLE_STATES,
    REPO_ROOT,
    WAIT,
    DaemonProcess,
    EventRecorder,
    Gate,
    split_replies,
)
from tlscerts import openssl_or_skip, self_signed

from nicos.clients.base import VIA_EXTRA, LoginFailed, TLSFailed
from nicos.clients.tls import client_context
from nicos_daemon.server import TLS_REQUIRED

CLIENT = REPO_ROOT / "bin" / "nicos-client"
# Short, so that stalled handshakes end well within WAIT; still far above what a
# TLS handshake plus login takes on loopback.
LOGIN_TIMEOUT = 3.0


class Certs:
    def __init__(self, directory: Path) -> None:
        self.server = self_signed(directory, "daemon")
        self.other = self_signed(directory, "impostor")  # same names, another key
        # Trusted by some tests below, but made out for another host.
        self.elsewhere = self_signed(directory, "elsewhere", common_name="elsewhere",
                                     alt_names="DNS:elsewhere.example.org")
        self.client = self_signed(directory, "client", common_name="operator",
                                  alt_names="DNS:operator.example.org")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    openssl_or_skip()
    return Certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def start_daemon(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 rsa_key_file: Path, accounts: dict) -> Iterator[Callable[..., DaemonProcess]]:
    """``start_daemon(name, **settings)``; each must still run at the end of the module
    and stop cleanly on SIGTERM."""
    started: list[DaemonProcess] = []

    def start(name: str, **settings: Any) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path_factory.mktemp(name), rsa_key_file,
                               accounts.values(), **settings)
        started.append(daemon)
        return daemon.start()

    failures_before = request.session.testsfailed
    yield start
    for daemon in started:
        alive = daemon.alive()
        code = daemon.stop()
        if request.session.testsfailed > failures_before:
            print(daemon.diagnostics())
        assert alive, f"TLS daemon died during the module\n{daemon.diagnostics()}"
        assert code == 0, f"exit code {code} after SIGTERM\n{daemon.diagnostics()}"


@pytest.fixture(scope="module")
def tls_daemon(start_daemon: Callable[..., DaemonProcess], certs: Certs) -> DaemonProcess:
    return start_daemon("tls", tls_certfile=str(certs.server.cert),
                        tls_keyfile=str(certs.server.key), login_timeout=LOGIN_TIMEOUT)


@pytest.fixture()
def tls_connect(tls_daemon: DaemonProcess,
                certs: Certs) -> Iterator[Callable[..., EventRecorder]]:
    """``tls_connect(user="admin", **connect_kwds)``: logged in over TLS, trusting the
    daemon's self-signed certificate unless told otherwise."""
    clients: list[EventRecorder] = []

    def connect(user: str = "admin", daemon: DaemonProcess = tls_daemon,
                **kwds: Any) -> EventRecorder:
        if "tls" not in kwds:
            kwds.update(tls=True, cafile=certs.server.cert)
        client = EventRecorder()
        clients.append(client)
        client.connect(daemon.host, daemon.port, user, daemon.accounts[user].password,
                       timeout=WAIT * 3, **kwds)
        return client

    yield connect
    for client in clients:
        client.disconnect()


def log_text(daemon: DaemonProcess) -> str:
    return (daemon.logdir / "daemon.log").read_text(errors="replace")


# -- the normal case ---------------------------------------------------------------------


def test_login_script_and_its_output_over_tls(tls_connect: Callable[..., EventRecorder]
                                              ) -> None:
    client = tls_connect("admin")
    assert client.user_level == 20
    conn = client._conn
    assert conn is not None and conn.events is not None
    # Both sockets are TLS sockets (the daemon would refuse anything else anyway). The
    # version is asked of the idle control socket only: the event thread may be in the
    # middle of reading a post-handshake message on the other one.
    assert isinstance(conn.control, ssl.SSLSocket) and isinstance(conn.events, ssl.SSLSocket)
    assert conn.control.version() in ("TLSv1.2", "TLSv1.3")
    since = client.mark()
    reqid = client.run("print('over-' + 'tls')\nprint(2 * 21)\n", "tls.py")
    done = client.wait_done(reqid)
    assert done.data.get("success", True) is not False, done
    texts = [m[3] for m in client.messages(since, reqid)]
    assert "over-tls\n" in texts and "42\n" in texts, texts
    assert client.eval("1 + 1") == 2


def test_several_clients_at_once(tls_connect: Callable[..., EventRecorder]) -> None:
    watcher = tls_connect("guest")
    admin = tls_connect("admin")
    since = watcher.mark()
    reqid = admin.run("print('seen-by-' + 'guest')\n")
    watcher.wait_for("message", lambda d: d[3] == "seen-by-guest\n" and d[5] == reqid,
                     since=since)


def test_emergency_on_a_second_connection_uses_tls(
        tls_connect: Callable[..., EventRecorder], gates: Callable[[], Gate]) -> None:
    """While the control connection waits for a slow exec, emergency() logs in on a
    second connection with the same TLS settings (this daemon accepts nothing else)."""
    client = tls_connect("admin")
    script_gate, exec_gate = gates(), gates()
    reqid = client.run(script_gate.wait_code(), "tls-emergency.py", queue=False)
    client.wait_status(0)
    # Waits for its gate, at most ~20 s, so that a failing test frees the daemon.
    slow_code = ("print('tls-exec-' + 'waiting')\n"
                 "for _ in range(2000):\n"
                 f"    if __import__('os').path.exists({str(exec_gate.path)!r}):\n"
                 "        break\n"
                 "    __import__('time').sleep(0.01)\n")
    outcome: dict[str, Any] = {}

    def slow_exec() -> None:
        try:
            outcome["value"] = client.ask("exec", slow_code)
        except BaseException as err:  # noqa: BLE001 - checked below
            outcome["error"] = err

    since = client.mark()
    thread = threading.Thread(target=slow_exec, name="tls-slow-exec", daemon=True)
    thread.start()
    try:
        client.wait_for("message", lambda d: d[3] == "tls-exec-waiting\n", since=since)
        assert client.emergency() == VIA_EXTRA
        assert client.wait_done(reqid).data["success"] is False
    finally:
        exec_gate.open()
        script_gate.open()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert outcome == {"value": None}
    assert client.ask("getstatus")["status"][0] in IDLE_STATES


# -- refusals ----------------------------------------------------------------------------


def test_plain_client_is_refused_with_a_reason(tls_daemon: DaemonProcess) -> None:
    client = EventRecorder()
    with pytest.raises(LoginFailed) as info:
        client.connect(tls_daemon.host, tls_daemon.port, "admin",
                       tls_daemon.accounts["admin"].password, timeout=WAIT * 3)
    assert "accepts only TLS" in str(info.value)
    assert not client.connected


def test_plain_bytes_get_a_plain_refusal_and_a_log_line(tls_daemon: DaemonProcess) -> None:
    with tls_daemon.raw() as conn:
        # A fixed id: a random one could start with 0x16 and look like TLS.
        conn.send(b"plain-client-id!")
        received = conn.read_until_closed()
    # The refusal, readable by an upstream client, and nothing else: no banner.
    assert split_replies(received) == [(False, TLS_REQUIRED)]
    # Logged before the refusal was sent.
    assert "connection from 127.0.0.1 refused: no TLS" in log_text(tls_daemon)


@pytest.mark.parametrize("trust", ["impostor", "system"])
def test_wrong_ca_fails_certificate_verification(tls_connect: Callable[..., EventRecorder],
                                                 certs: Certs, trust: str) -> None:
    cafile = certs.other.cert if trust == "impostor" else None
    with pytest.raises(TLSFailed) as info:
        tls_connect("admin", tls=True, cafile=cafile)
    message = str(info.value)
    assert "certificate verification failed" in message
    assert "127.0.0.1" in message


def test_other_daemon_and_wrong_host_name_are_detected(
        start_daemon: Callable[..., DaemonProcess],
        tls_connect: Callable[..., EventRecorder], certs: Certs) -> None:
    other = start_daemon("elsewhere", tls_certfile=str(certs.elsewhere.cert),
                         tls_keyfile=str(certs.elsewhere.key))
    # Not the certificate the client trusts (as if someone else answered on that port).
    with pytest.raises(TLSFailed, match="certificate verification failed"):
        tls_connect("admin", daemon=other)
    # Trusted, but made out for another host than the one connected to.
    with pytest.raises(TLSFailed, match="certificate verification failed") as info:
        tls_connect("admin", daemon=other, tls=True, cafile=certs.elsewhere.cert)
    assert "mismatch" in str(info.value)


def test_tls_client_against_a_plain_daemon(daemon: DaemonProcess, certs: Certs) -> None:
    client = EventRecorder()
    with pytest.raises(TLSFailed, match="is TLS enabled on the daemon"):
        client.connect(daemon.host, daemon.port, "admin", daemon.accounts["admin"].password,
                       timeout=WAIT * 3, tls=True, cafile=certs.server.cert)


def test_unverified_context_is_an_explicit_opt_out(tls_connect: Callable[..., EventRecorder],
                                                   ) -> None:
    client = tls_connect("user", tls=client_context(verify=False))
    assert client.user_level == 10


# -- no peer can hold up the others ------------------------------------------------------


def test_stalled_handshakes_delay_nobody_and_are_dropped(
        tls_daemon: DaemonProcess, tls_connect: Callable[..., EventRecorder]) -> None:
    silent = tls_daemon.raw()  # connects and sends nothing
    stalled = tls_daemon.raw()
    # A TLS record header announcing 512 bytes of handshake that never come.
    stalled.send(b"\x16\x03\x01\x02\x00")
    try:
        client = tls_connect("admin")  # accepted and served meanwhile
        assert client.ask("getversion") == client.banner["daemon_version"]
        # The daemon drops both at its login timeout (WAIT is only a guard).
        assert stalled.is_closed(WAIT), "stalled TLS handshake still open"
        assert silent.is_closed(WAIT), "silent connection still open"
    finally:
        silent.close()
        stalled.close()
    assert client.connected


# -- client certificates -----------------------------------------------------------------


@pytest.fixture(scope="module")
def mutual_daemon(start_daemon: Callable[..., DaemonProcess], certs: Certs) -> DaemonProcess:
    # The client certificate is self-signed, so it is its own CA here.
    return start_daemon("mtls", tls_certfile=str(certs.server.cert),
                        tls_keyfile=str(certs.server.key), tls_cafile=str(certs.client.cert),
                        tls_require_client_cert=True, login_timeout=LOGIN_TIMEOUT)


def test_client_certificate_required(mutual_daemon: DaemonProcess, certs: Certs,
                                     tls_connect: Callable[..., EventRecorder]) -> None:
    with pytest.raises(TLSFailed, match="client certificate"):
        tls_connect("admin", daemon=mutual_daemon)
    # A certificate, but not one the daemon trusts.
    with pytest.raises(TLSFailed, match="client certificate"):
        tls_connect("admin", daemon=mutual_daemon,
                    tls=client_context(certs.server.cert, certfile=certs.other.cert,
                                       keyfile=certs.other.key))
    client = tls_connect("admin", daemon=mutual_daemon,
                         tls=client_context(certs.server.cert, certfile=certs.client.cert,
                                            keyfile=certs.client.key))
    reqid = client.run("print('mutual-' + 'tls')\n")
    client.wait_for("message", lambda d: d[3] == "mutual-tls\n" and d[5] == reqid)


# -- start-up ----------------------------------------------------------------------------


@pytest.mark.parametrize("which, expected", [
    ("mismatch", "cannot be used together"),
    ("missing", "No such file or directory"),
    ("keyonly", "'tls_keyfile' is set but 'tls_certfile' is not"),
])
def test_daemon_refuses_to_start_with_unusable_tls_files(
        tmp_path: Path, rsa_key_file: Path, accounts: dict, certs: Certs,
        which: str, expected: str) -> None:
    settings = {
        "mismatch": dict(tls_certfile=str(certs.server.cert), tls_keyfile=str(certs.other.key)),
        "missing": dict(tls_certfile=str(tmp_path / "absent.crt"),
                        tls_keyfile=str(certs.server.key)),
        "keyonly": dict(tls_keyfile=str(certs.server.key)),
    }[which]
    daemon = DaemonProcess(tmp_path / "daemon", rsa_key_file, accounts.values(), **settings)
    with pytest.raises(RuntimeError, match="exited with code 2"):
        daemon.start()
    assert expected in daemon.stderr_path.read_text()


# -- the command-line client -------------------------------------------------------------


def run_cli(daemon: DaemonProcess, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("NICOS_PASSWORD", "PYTHONPATH")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"),
               XDG_STATE_HOME=str(home / "state"),
               NICOS_PASSWORD=daemon.accounts["user"].password)
    return subprocess.run([sys.executable, str(CLIENT), *args], env=env, capture_output=True,
                          text=True, timeout=WAIT * 3)


def test_cli_over_tls(tls_daemon: DaemonProcess, certs: Certs, tmp_path: Path) -> None:
    address = f"user@{tls_daemon.host}:{tls_daemon.port}"
    result = run_cli(tls_daemon, tmp_path, address, "--tls-ca", str(certs.server.cert),
                     "-c", "print('cli-' + 'tls')")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "cli-tls\n"

    plain = run_cli(tls_daemon, tmp_path, address, "-c", "1")
    assert plain.returncode == 4  # refused, like a login
    assert "accepts only TLS" in plain.stderr

    untrusted = run_cli(tls_daemon, tmp_path, address, "--tls", "-c", "1")
    assert untrusted.returncode == 5  # a connection problem
    assert "certificate verification failed" in untrusted.stderr


def test_cli_profile_with_tls(tls_daemon: DaemonProcess, certs: Certs, tmp_path: Path) -> None:
    config = tmp_path / "config" / "nicos-client"
    config.mkdir(parents=True)
    (config / "daemon.crt").write_bytes(certs.server.cert.read_bytes())
    (config / "profiles.toml").write_text(
        f'[profiles.lab]\nhost = "{tls_daemon.host}"\nport = {tls_daemon.port}\n'
        f'user = "user"\ntls_ca = "daemon.crt"\n')  # relative to the profile file
    result = run_cli(tls_daemon, tmp_path, "lab", "-c", "print('profile-' + 'tls')")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "profile-tls\n"
