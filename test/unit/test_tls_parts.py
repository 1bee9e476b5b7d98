"""TLS building blocks without a daemon process: the daemon's context and its errors,
client contexts, the socket class that never falls back to plain text, and the TLS
options of nicos-client. (Daemons with TLS: test/integration/test_daemon_tls.py.)

Certificates come from the openssl command line; without it these tests are skipped
with a loud reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from nicos.clients.base import ClientError, NicosClient, TLSFailed
from nicos.clients.cli import main as cli_main
from nicos.clients.cli import profiles
from nicos.clients.tls import CertificateFileError, client_context
from nicos.protocols.daemon.tls import TLSSocket, looks_like_tls
from nicos_daemon.config import DaemonConfig
from nicos_daemon.tls import TLSSetupError, server_context

WAIT = 10.0  # a guard for joins, never reached when the tests pass


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("NO TLS TESTS RUN: the 'openssl' command line tool was not found, so no "
                    "test certificates can be made (install openssl to run them)")
    result = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def _self_signed(directory: Path, name: str) -> Pair:
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-sha256", "-days", "2", "-nodes",
             "-keyout", str(pair.key), "-out", str(pair.cert), "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1")
    os.chmod(pair.key, 0o600)
    return pair


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pem")
    daemon = _self_signed(directory, "daemon")
    other = _self_signed(directory, "other")
    encrypted = directory / "encrypted.key"
    _openssl("pkey", "-in", str(daemon.key), "-aes256", "-passout", "pass:secret-42",
             "-out", str(encrypted))
    os.chmod(encrypted, 0o600)
    return {"cert": daemon.cert, "key": daemon.key, "other_key": other.key,
            "other_cert": other.cert, "encrypted_key": encrypted}


def tls_config(cert: Path, key: Path, **more: object) -> DaemonConfig:
    return DaemonConfig(tls_certfile=cert, tls_keyfile=key, **more)  # type: ignore[arg-type]


# -- the daemon's context ------------------------------------------------------------------


def test_no_context_without_tls() -> None:
    assert server_context(DaemonConfig()) is None


def test_server_context(pem: dict[str, Path]) -> None:
    context = server_context(tls_config(pem["cert"], pem["key"]))
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE  # no client certificates asked for
    assert context.sslsocket_class is TLSSocket
    required = server_context(tls_config(pem["cert"], pem["key"], tls_cafile=pem["other_cert"],
                                         tls_require_client_cert=True))
    assert required is not None and required.verify_mode == ssl.CERT_REQUIRED


def test_key_and_certificate_in_one_file(pem: dict[str, Path], tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_bytes(pem["key"].read_bytes() + pem["cert"].read_bytes())
    os.chmod(both, 0o600)
    assert server_context(tls_config(both, both)) is not None


@pytest.mark.parametrize("case, fragment", [
    ("missing", "tls_certfile {tmp}/absent.crt: No such file or directory"),
    ("cert_not_pem", "tls_certfile {key} holds no PEM certificate"),
    ("key_not_pem", "tls_keyfile {cert} holds no PEM private key"),
    ("mismatch", "cannot be used together (KEY_VALUES_MISMATCH)"),
    ("encrypted", "tls_keyfile {encrypted_key} is protected by a passphrase"),
    ("readable", "tls_keyfile {tmp}/open.key is accessible by others (mode 0644)"),
    ("directory", "tls_certfile {tmp} is not a regular file"),
    ("bad_ca", "tls_cafile {key} holds no usable PEM CA certificate"),
])
def test_unusable_files_are_named_clearly(pem: dict[str, Path], tmp_path: Path, case: str,
                                          fragment: str) -> None:
    cert, key = pem["cert"], pem["key"]
    more: dict[str, object] = {}
    if case == "missing":
        cert = tmp_path / "absent.crt"
    elif case == "cert_not_pem":
        cert = key
    elif case == "key_not_pem":
        key = cert
    elif case == "mismatch":
        key = pem["other_key"]
    elif case == "encrypted":
        key = pem["encrypted_key"]
    elif case == "readable":
        key = tmp_path / "open.key"
        key.write_bytes(pem["key"].read_bytes())
        os.chmod(key, 0o644)
    elif case == "directory":
        cert = tmp_path
    elif case == "bad_ca":
        more = {"tls_cafile": pem["key"], "tls_require_client_cert": True}
    with pytest.raises(TLSSetupError) as info:
        server_context(tls_config(cert, key, **more))
    expected = fragment.format(tmp=tmp_path, **{name: str(path) for name, path in pem.items()})
    assert expected in str(info.value)


# -- client contexts ---------------------------------------------------------------------


def test_client_context_verifies_by_default(pem: dict[str, Path]) -> None:
    context = client_context(pem["cert"])
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.sslsocket_class is TLSSocket
    unverified = client_context(verify=False)
    assert unverified.verify_mode == ssl.CERT_NONE and not unverified.check_hostname


def test_client_context_errors(pem: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(CertificateFileError, match="cannot use CA file .*absent.pem"):
        client_context(tmp_path / "absent.pem")
    with pytest.raises(CertificateFileError, match="cannot use CA file"):
        client_context(pem["key"])  # a key is no CA certificate
    with pytest.raises(CertificateFileError, match="cannot use client certificate"):
        client_context(pem["cert"], certfile=pem["cert"], keyfile=pem["other_key"])
    with pytest.raises(CertificateFileError, match="needs its certificate"):
        client_context(pem["cert"], keyfile=pem["key"])


def test_connect_checks_its_tls_arguments_before_connecting(pem: dict[str, Path],
                                                            tmp_path: Path) -> None:
    client = NicosClient()
    # Port 9 of a loopback address: never reached, the arguments are refused first.
    with pytest.raises(ClientError, match="cafile is only used with tls=True"):
        client.connect("127.0.0.1", 9, "u", "p", cafile=pem["cert"])
    with pytest.raises(ClientError, match="not both"):
        client.connect("127.0.0.1", 9, "u", "p", tls=client_context(), cafile=pem["cert"])
    with pytest.raises(TLSFailed, match="cannot use CA file"):
        client.connect("127.0.0.1", 9, "u", "p", tls=True, cafile=tmp_path / "absent.pem")


# -- the socket class ----------------------------------------------------------------------


def test_first_byte_of_tls() -> None:
    assert looks_like_tls(b"\x16")
    assert not looks_like_tls(b"\x00") and not looks_like_tls(b"")


def test_shutdown_never_falls_back_to_plain_text(pem: dict[str, Path]) -> None:
    """After shutdown() (used to wake a blocked reader), data sent on the socket must
    still be encrypted; the ssl module's own SSLSocket sends it in plain text."""
    context = server_context(tls_config(pem["cert"], pem["key"]))
    assert context is not None
    server_end, client_end = socket.socketpair()
    server = context.wrap_socket(server_end, server_side=True, do_handshake_on_connect=False)
    client = client_context(pem["cert"]).wrap_socket(client_end, server_hostname="localhost",
                                                     do_handshake_on_connect=False)
    with server, client:
        handshake = threading.Thread(target=server.do_handshake, daemon=True)
        handshake.start()
        client.do_handshake()
        handshake.join(WAIT)
        assert not handshake.is_alive()
        server.shutdown(socket.SHUT_RD)
        server.sendall(b"secret-after-shutdown")
        server.close()
        received = bytearray()
        while chunk := socket.socket.recv(client, 65536):  # below TLS: the wire bytes
            received += chunk
    assert received  # the data did go out ...
    assert b"secret-after-shutdown" not in received  # ... encrypted


# -- nicos-client options ------------------------------------------------------------------


def _cli_tls(argv: list[str], target: profiles.Target) -> ssl.SSLContext | None:
    args = cli_main.build_parser().parse_intermixed_args(argv)
    return cli_main.tls_context(args, target)


def test_cli_tls_options(pem: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    plain = profiles.Target("h")
    assert _cli_tls(["h"], plain) is None
    assert _cli_tls(["h", "--tls"], plain).verify_mode == ssl.CERT_REQUIRED
    assert _cli_tls(["h", "--tls-ca", str(pem["cert"])], plain) is not None  # implies --tls
    from_profile = profiles.Target("h", tls=True, tls_ca=str(pem["cert"]))
    assert _cli_tls(["h"], from_profile) is not None
    unverified = _cli_tls(["h", "--tls-no-verify"], plain)
    assert unverified is not None and unverified.verify_mode == ssl.CERT_NONE
    assert "WARNING: --tls-no-verify" in capsys.readouterr().err
    with pytest.raises(cli_main.UsageError, match="--tls-no-verify accepts any certificate"):
        _cli_tls(["h", "--tls-no-verify"], from_profile)
    with pytest.raises(cli_main.UsageError, match="cannot use CA file"):
        _cli_tls(["h", "--tls-ca", str(pem["key"])], plain)


def test_profile_tls_keys(tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text('[profiles.lab]\nhost = "h"\ntls_ca = "ca/lab.pem"\n'
                    '[profiles.abs]\nhost = "h"\ntls = true\ntls_cert = "/etc/me.pem"\n')
    known = profiles.load_profiles(path)
    lab = profiles.resolve_target("lab", known)
    assert lab.tls and lab.tls_ca == str(tmp_path / "ca" / "lab.pem")
    absolute = profiles.resolve_target("abs", known)
    assert absolute.tls and absolute.tls_cert == "/etc/me.pem" and absolute.tls_ca is None
    assert not profiles.resolve_target("other-host", known).tls


@pytest.mark.parametrize("text, message", [
    ('[profiles.x]\nhost = "h"\ntls = false\ntls_ca = "ca.pem"\n', "contradicts"),
    ('[profiles.x]\nhost = "h"\ntls_ca = ""\n', "tls_ca is empty"),
    ('[profiles.x]\nhost = "h"\ntls = "yes"\n', "tls must be a bool"),
    ('[profiles.x]\nhost = "h"\ntls_verify = false\n', "unknown key 'tls_verify'"),
])
def test_profile_tls_keys_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text(text)
    with pytest.raises(profiles.ProfileError) as info:
        profiles.load_profiles(path)
    assert message in str(info.value)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_client_not_reading_replies_is_dropped(pem: dict[str, Path], tls: bool) -> None:
    # ssl retries a send that SO_SNDTIMEO interrupted, forever; the daemon must
    # drop a client that stopped reading its replies over TLS as over plain TCP.
    from test_server import FakeController  # stands in for the script controller

    from nicos.protocols.daemon.framing import encode_command
    from nicos_daemon.auth import make_authenticator
    from nicos_daemon.auth.passwords import hash_password
    from nicos_daemon.auth.rsakeys import ServerKey
    from nicos_daemon.config import PasswdEntry
    from nicos_daemon.events import EventBus
    from nicos_daemon.server import Server

    more = {"tls_certfile": pem["cert"], "tls_keyfile": pem["key"]} if tls else {}
    config = DaemonConfig(host="127.0.0.1", port=0, authmethod="list",  # type: ignore[arg-type]
                          passwd={"alice": PasswdEntry(hash_password("alice-secret-1"), 20)},
                          **more)
    bus = EventBus()
    server = Server(config, FakeController(bus), bus, ServerKey.load_or_create(None),
                    make_authenticator(config), event_send_timeout=1.0)
    server.start()
    client = NicosClient()
    try:
        client.connect("127.0.0.1", server.port, "alice", "alice-secret-1",
                       tls=client_context(pem["cert"]) if tls else False)
        assert server.logged_in == 1
        # eval echoes its expression: 1 MB replies that are never read
        frame = encode_command("eval", ["x" * 1_000_000, False])
        sock = client._conn.control  # type: ignore[union-attr]
        sock.settimeout(WAIT)
        with pytest.raises(OSError):
            for _ in range(200):  # far more than the socket buffers take
                sock.sendall(frame)
        assert server.wait_until(lambda: server.logged_in == 0, WAIT), \
            "the client that reads no replies was not dropped"
    finally:
        client.disconnect()
        server.shutdown()
