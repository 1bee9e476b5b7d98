"""The daemon's RSA login key: banner value, password decryption, key file handling."""

import base64
import os
import stat

import pytest
import rsa

from nicos_daemon.auth import rsakeys
from nicos_daemon.auth.base import AuthError
from nicos_daemon.auth.rsakeys import KeyFileError, ServerKey


@pytest.fixture(scope="module")
def key_path(tmp_path_factory):
    """A key generated for real into a file that does not exist yet.

    Created under umask 0 to show that the 0600 mode does not depend on the umask.
    """
    path = tmp_path_factory.mktemp("keys") / "sub" / "daemon_rsa.pem"
    old_umask = os.umask(0)
    try:
        ServerKey.load_or_create(path)
    finally:
        os.umask(old_umask)
    return path


@pytest.fixture(scope="module")
def key(key_path):
    return ServerKey.load_or_create(key_path)


def upstream_client_encrypt(banner_rsakey: str, password: str, mime: bool = True) -> str:
    """What the upstream client does with the banner's ``rsakey`` (§5.2)."""
    pem = base64.b64decode(banner_rsakey)
    public_key = rsa.PublicKey.load_pkcs1(pem)
    cipher = rsa.encrypt(password.encode("utf-8"), public_key)
    # Upstream uses MIME base64 (base64.encodebytes), which inserts line breaks.
    encoded = base64.encodebytes(cipher) if mime else base64.b64encode(cipher)
    return "RSA:" + encoded.decode()


def test_banner_value_is_base64_of_pkcs1_public_pem(key):
    value = key.banner_value()
    assert isinstance(value, str) and value.isascii()
    pem = base64.b64decode(value, validate=True)
    assert pem.startswith(b"-----BEGIN RSA PUBLIC KEY-----\n")
    assert rsa.PublicKey.load_pkcs1(pem).n.bit_length() == 2048


@pytest.mark.parametrize("password", ["nicos-demo-admin", "pässwörd €", "x" * 245])
@pytest.mark.parametrize("mime", [True, False])
def test_upstream_client_round_trip(key, password, mime):
    field = upstream_client_encrypt(key.banner_value(), password, mime)
    assert ("\n" in field) is mime
    assert key.decrypt_password(field) == password


def test_max_password_bytes(key):
    assert key.max_password_bytes == 245


@pytest.mark.parametrize("field", ["secret", "", "rsa:abc", " RSA:abc", None, b"RSA:abc"])
def test_plain_text_password_is_refused(key, field):
    with pytest.raises(AuthError, match="^password must be RSA-encrypted$"):
        key.decrypt_password(field)


def _tampered(key: ServerKey) -> str:
    cipher = bytearray(base64.b64decode(upstream_client_encrypt(key.banner_value(), "pw")[4:]))
    cipher[-1] ^= 0x55
    return "RSA:" + base64.b64encode(bytes(cipher)).decode()


@pytest.mark.parametrize("make_field", [
    lambda key: "RSA:",
    lambda key: "RSA:!!!not base64!!!",
    lambda key: "RSA:" + base64.b64encode(b"short").decode(),
    lambda key: "RSA:" + base64.b64encode(bytes(256)).decode(),
    lambda key: "RSA:" + "A" * 100_000,
    lambda key: "RSA:ÄÖÜ",
    _tampered,
])
def test_undecryptable_password(key, make_field):
    with pytest.raises(AuthError, match="^could not decrypt password$") as info:
        key.decrypt_password(make_field(key))
    # Padding-failure details must not travel with the error (they help key attacks).
    error = info.value
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def test_key_file_is_created_private(key_path):
    mode = stat.S_IMODE(key_path.stat().st_mode)
    assert mode == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert [p.name for p in key_path.parent.iterdir()] == [key_path.name]  # no temp left


def test_key_file_is_reloaded_identically(key_path, key):
    again = ServerKey.load_or_create(key_path)
    assert again.banner_value() == key.banner_value()
    assert again.fingerprint() == key.fingerprint()
    field = upstream_client_encrypt(key.banner_value(), "same key")
    assert again.decrypt_password(field) == "same key"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o660])
def test_key_file_accessible_by_others_is_refused(tmp_path, key_path, mode):
    exposed = tmp_path / "exposed.pem"
    exposed.write_bytes(key_path.read_bytes())
    exposed.chmod(mode)
    with pytest.raises(KeyFileError, match="group or others") as info:
        ServerKey.load_or_create(exposed)
    assert "chmod 600" in str(info.value)


def _private_file(path, data: bytes):
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def test_key_file_with_garbage_is_refused(tmp_path):
    path = _private_file(tmp_path / "garbage.pem", b"not a key\n")
    with pytest.raises(KeyFileError, match="PKCS#1"):
        ServerKey.load_or_create(path)


def test_weak_key_file_is_refused(tmp_path):
    _, small = rsa.newkeys(512)
    path = _private_file(tmp_path / "small.pem", small.save_pkcs1("PEM"))
    with pytest.raises(KeyFileError, match="at least 2048"):
        ServerKey.load_or_create(path)


def test_key_path_that_is_a_directory_is_refused(tmp_path):
    directory = tmp_path / "dir.pem"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        ServerKey.load_or_create(directory)


@pytest.mark.parametrize("bits", [512, 1024, 16384])
def test_key_size_limits(bits):
    with pytest.raises(ValueError):
        ServerKey.load_or_create(None, bits=bits)


def test_without_path_the_key_stays_in_memory(tmp_path, monkeypatch, key):
    # Generation itself is covered by the fixture; here only "no file is written" matters.
    requested = []

    def fake_newkeys(bits):
        requested.append(bits)
        return key._public, key._private

    monkeypatch.setattr(rsakeys.rsa, "newkeys", fake_newkeys)
    monkeypatch.chdir(tmp_path)
    in_memory = ServerKey.load_or_create(None)
    assert requested == [2048]
    assert in_memory.fingerprint() == key.fingerprint()
    assert list(tmp_path.iterdir()) == []


def test_key_path_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeyFileError, match="not a regular file"):
        ServerKey.load_or_create(fifo)
