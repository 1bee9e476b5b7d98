"""Fixtures for integration tests: real daemon processes on loopback.

- ``rsa_key_file`` (session): one 2048-bit key, mode 0600, shared by all daemons.
- ``accounts`` (session): admin/user/guest with scrypt hashes (hashing is slow,
  so it happens once).
- ``daemon`` (module): one daemon process per test module; stopped with SIGTERM
  at the end of the module, which must end it cleanly (exit code 0).
- ``new_daemon``: factory for tests that need their own daemon (restart, throttle).
- ``connect`` / ``client``: logged-in :class:`EventRecorder` clients, disconnected
  after the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import rsa
from daemonproc import Account, DaemonProcess, EventRecorder, Gate, make_idle

from nicos_daemon.auth.passwords import hash_password

PASSWORDS = {
    "admin": ("admin-Secret-42", "admin"),
    "user": ("user-Secret-42", "user"),
    "guest": ("guest-Secret-42", "guest"),
}


def _new_pkcs1_key(bits: int = 2048) -> bytes:
    """A PKCS#1 PEM private key; openssl takes ~0.1 s, pure-Python rsa 1-5 s."""
    openssl = shutil.which("openssl")
    if openssl is not None:
        result = subprocess.run([openssl, "genrsa", "-traditional", str(bits)],
                                capture_output=True, timeout=60)
        if result.returncode == 0 and result.stdout.startswith(b"-----BEGIN RSA PRIVATE KEY"):
            return result.stdout
    return rsa.newkeys(bits)[1].save_pkcs1()


@pytest.fixture(scope="session")
def rsa_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rsakey") / "daemon_rsa.pem"
    pem = _new_pkcs1_key()
    assert rsa.PrivateKey.load_pkcs1(pem).n.bit_length() == 2048
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as keyfile:
        keyfile.write(pem)
    os.chmod(path, 0o600)  # whatever the umask
    return path


@pytest.fixture(scope="session")
def accounts() -> dict[str, Account]:
    return {name: Account(name, password, level, hash_password(password))
            for name, (password, level) in PASSWORDS.items()}


@pytest.fixture(scope="session")
def new_daemon(tmp_path_factory: pytest.TempPathFactory, rsa_key_file: Path,
               accounts: dict[str, Account]) -> Iterator[Callable[..., DaemonProcess]]:
    """Start a daemon: ``new_daemon(name, **config_settings)``; stopped at session end
    unless the test stopped it itself."""
    started: list[DaemonProcess] = []

    def start(name: str = "daemon", **settings: Any) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path_factory.mktemp(name), rsa_key_file,
                               accounts.values(), **settings)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        if daemon.alive():
            daemon.stop()


@pytest.fixture(scope="module")
def daemon(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           rsa_key_file: Path, accounts: dict[str, Account]) -> Iterator[DaemonProcess]:
    name = request.module.__name__.rpartition(".")[2]
    proc = DaemonProcess(tmp_path_factory.mktemp(name), rsa_key_file, accounts.values())
    proc.start()
    failures_before = request.session.testsfailed
    try:
        yield proc
    finally:
        alive = proc.alive()
        code = proc.stop()
        if request.session.testsfailed > failures_before:
            print(proc.diagnostics())  # shown with the failing tests' output
        assert alive, f"daemon died during the module\n{proc.diagnostics()}"
        assert code == 0, (f"daemon did not exit cleanly after SIGTERM (exit code {code}; "
                           f"None = had to be killed)\n{proc.diagnostics()}")


@pytest.fixture()
def connect(daemon: DaemonProcess) -> Iterator[Callable[..., EventRecorder]]:
    """``connect(user="admin", eventmask=())`` -> a logged-in EventRecorder."""
    clients: list[EventRecorder] = []

    def make(user: str = "admin", **kwds: Any) -> EventRecorder:
        client = daemon.connect(user, **kwds)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.disconnect()


@pytest.fixture()
def client(connect: Callable[..., EventRecorder], daemon: DaemonProcess) -> Iterator[EventRecorder]:
    """An admin client; after the test the daemon is brought back to idle."""
    admin = connect("admin")
    yield admin
    if daemon.alive():
        cleanup = daemon.connect("admin")
        try:
            make_idle(cleanup)
        finally:
            cleanup.disconnect()


@pytest.fixture()
def gates(tmp_path: Path) -> Callable[[], Gate]:
    """Factory of :class:`Gate` files in the test's temporary directory."""
    counter = iter(range(1000))

    def make() -> Gate:
        return Gate(tmp_path / f"gate-{next(counter)}")

    return make
