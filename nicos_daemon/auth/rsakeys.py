"""The daemon's RSA key, used by clients to encrypt the login password (§5.1, §5.2).

Unlike upstream (a fresh 512-bit key per connection), the daemon keeps one key of at
least 2048 bits; stored in a file, it survives restarts so that clients can pin it.
"""

import base64
import binascii
import hashlib
import logging
import os
import stat
from pathlib import Path

import rsa

from .base import AuthError

log = logging.getLogger("nicos_daemon.auth.rsakeys")

MIN_BITS = 2048
MAX_BITS = 8192
RSA_PREFIX = "RSA:"
_MAX_KEY_FILE_BYTES = 64 * 1024
# Upstream clients use MIME base64, which breaks lines; those breaks are not data.
_BASE64_LINE_BREAKS = str.maketrans("", "", "\r\n")


class KeyFileError(Exception):
    """The key file exists but cannot be used; the message says why and what to do."""


class ServerKey:
    def __init__(self, private_key: rsa.PrivateKey) -> None:
        bits = private_key.n.bit_length()
        if bits < MIN_BITS:
            raise KeyFileError(f"RSA key has {bits} bits; at least {MIN_BITS} are required")
        self._private = private_key
        self._public = rsa.PublicKey(private_key.n, private_key.e)
        self._cipher_bytes = rsa.common.byte_size(private_key.n)

    @classmethod
    def load_or_create(cls, path: Path | str | None, bits: int = MIN_BITS) -> "ServerKey":
        """Load the key from ``path``, create it there if missing, or keep it in memory.

        Raises KeyFileError if an existing file is accessible by group/others or is not a
        PKCS#1 RSA private key in PEM form.
        """
        if not MIN_BITS <= bits <= MAX_BITS:
            raise ValueError(f"key size must be between {MIN_BITS} and {MAX_BITS} bits")
        if path is None:
            log.info("generating a %d-bit RSA key in memory (changes on every start)", bits)
            return cls(rsa.newkeys(bits)[1])
        path = Path(path)
        try:
            return cls._load(path)
        except FileNotFoundError:
            pass
        return cls._create(path, bits)

    @classmethod
    def _load(cls, path: Path) -> "ServerKey":
        # Checking the mode of the opened descriptor, not the path, leaves no window in
        # which the file could be swapped between check and read.
        # O_NONBLOCK: a FIFO planted at the key path must not hang the start-up.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise KeyFileError(f"RSA key file {path} is not a regular file")
            if mode & 0o077:
                raise KeyFileError(
                    f"RSA key file {path} is accessible by group or others "
                    f"(mode {stat.S_IMODE(mode):04o}); run 'chmod 600 {path}'"
                )
            data = os.read(fd, _MAX_KEY_FILE_BYTES + 1)
        finally:
            os.close(fd)
        if len(data) > _MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"RSA key file {path} is too large to be a key")
        try:
            private_key = rsa.PrivateKey.load_pkcs1(data, "PEM")
        except Exception as err:  # the rsa/pyasn1 parsers raise many unrelated types
            raise KeyFileError(
                f"RSA key file {path} is not a PKCS#1 PEM private key "
                f"('-----BEGIN RSA PRIVATE KEY-----'): {err}"
            ) from err
        key = cls(private_key)
        log.info("loaded %d-bit RSA key from %s (fingerprint %s)", key.bits, path,
                 key.fingerprint())
        return key

    @classmethod
    def _create(cls, path: Path, bits: int) -> "ServerKey":
        log.info("generating a %d-bit RSA key for %s", bits, path)
        key = cls(rsa.newkeys(bits)[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write to a private temporary file, then hard-link it into place: the key
        # appears complete or not at all, and a concurrently started daemon that won the
        # race keeps its key (we then load that one instead).
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as keyfile:
                keyfile.write(key._private.save_pkcs1("PEM"))
                keyfile.flush()
                os.fsync(keyfile.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                log.warning("RSA key file %s appeared while generating; using it", path)
                return cls._load(path)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("wrote RSA key to %s (fingerprint %s)", path, key.fingerprint())
        return key

    @property
    def bits(self) -> int:
        return self._private.n.bit_length()

    @property
    def max_password_bytes(self) -> int:
        """Longest UTF-8 password a client can encrypt with this key (PKCS#1 v1.5)."""
        return self._cipher_bytes - 11

    def public_pem(self) -> bytes:
        return self._public.save_pkcs1("PEM")

    def banner_value(self) -> str:
        """The banner's ``rsakey``: base64 over the PEM text of the PKCS#1 public key."""
        return base64.b64encode(self.public_pem()).decode("ascii")

    def fingerprint(self) -> str:
        """SHA-256 over the DER public key, for logs and for clients that pin the key."""
        return hashlib.sha256(self._public.save_pkcs1("DER")).hexdigest()

    def decrypt_password(self, field: str) -> str:
        """Decrypt the ``passwd`` field of ``authenticate``: ``"RSA:"`` + base64.

        Plain-text passwords are refused (no downgrade, §11.4).
        """
        if not isinstance(field, str) or not field.startswith(RSA_PREFIX):
            raise AuthError("password must be RSA-encrypted")
        encoded = field[len(RSA_PREFIX):]
        # Generous bound: base64 of one cipher block plus MIME line breaks.
        if len(encoded) > 2 * self._cipher_bytes + 16:
            raise AuthError("could not decrypt password")
        try:
            cipher = base64.b64decode(encoded.translate(_BASE64_LINE_BREAKS), validate=True)
            if len(cipher) != self._cipher_bytes:
                raise ValueError("cipher text is not one key-sized block")
            return rsa.decrypt(cipher, self._private).decode("utf-8")
        except (binascii.Error, ValueError, OverflowError, rsa.DecryptionError):
            # The cause is dropped on purpose: details of a padding failure help an
            # attacker probing the key (Bleichenbacher), and nothing else needs them.
            raise AuthError("could not decrypt password") from None
