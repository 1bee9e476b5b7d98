"""The daemon's TLS context, built once at start-up from ``tls_*`` configuration keys.

Every problem with the files (missing, not PEM, encrypted key, key not matching the
certificate) stops the start with a message naming the key and the file, instead of
the ssl module's bare "PEM lib" errors.
"""

from __future__ import annotations

import logging
import os
import ssl
import stat
from pathlib import Path

from nicos.protocols.daemon.tls import harden

from .config import DaemonConfig

log = logging.getLogger("nicos_daemon.tls")

# PEM files of certificates, chains and keys are a few KiB; a CA bundle a few hundred.
_MAX_PEM_BYTES = 4 * 1024 * 1024


class TLSSetupError(Exception):
    """The configured TLS files cannot be used; the message names key and file."""


def _read_pem(key: str, path: Path) -> str:
    # O_NONBLOCK: a FIFO at the path must not hang the start-up.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise TLSSetupError(f"{key} {path}: {err.strerror or err}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise TLSSetupError(f"{key} {path} is not a regular file")
        data = os.read(fd, _MAX_PEM_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_PEM_BYTES:
        raise TLSSetupError(f"{key} {path} is too large to be a PEM file")
    return data.decode("ascii", errors="replace")


def _check_key_file(path: Path, text: str) -> None:
    if "PRIVATE KEY-----" not in text:
        raise TLSSetupError(f"tls_keyfile {path} holds no PEM private key "
                            "('-----BEGIN ... PRIVATE KEY-----')")
    if "-----BEGIN ENCRYPTED PRIVATE KEY-----" in text or "Proc-Type: 4,ENCRYPTED" in text:
        # The daemon runs unattended and cannot ask for a passphrase.
        raise TLSSetupError(f"tls_keyfile {path} is protected by a passphrase, which the "
                            f"daemon cannot ask for; store it unencrypted with mode 0600 "
                            f"('openssl pkey -in {path} -out NEWFILE')")
    mode = os.stat(path).st_mode
    if mode & 0o007:
        # Whoever holds the key can impersonate the daemon to every client.
        raise TLSSetupError(f"tls_keyfile {path} is accessible by others (mode "
                            f"{stat.S_IMODE(mode):04o}); run 'chmod 600 {path}' (or 640 "
                            "with a group such as ssl-cert)")


def _no_passphrase() -> bytes:
    # Never reached for keys that passed _check_key_file; it stops OpenSSL from
    # prompting on the terminal should a key format slip past that check.
    raise TLSSetupError("tls_keyfile is protected by a passphrase")


def server_context(config: DaemonConfig) -> ssl.SSLContext | None:
    """The server-side context for ``config``, or None when TLS is off.

    Raises TLSSetupError when a file is missing, unreadable or unusable.
    """
    if config.tls_certfile is None or config.tls_keyfile is None:
        return None
    certfile, keyfile = config.tls_certfile, config.tls_keyfile
    if "-----BEGIN CERTIFICATE-----" not in _read_pem("tls_certfile", certfile):
        raise TLSSetupError(f"tls_certfile {certfile} holds no PEM certificate "
                            "('-----BEGIN CERTIFICATE-----')")
    _check_key_file(keyfile, _read_pem("tls_keyfile", keyfile))
    context = harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    try:
        context.load_cert_chain(certfile, keyfile, password=_no_passphrase)
    except ssl.SSLError as err:
        raise TLSSetupError(f"tls_certfile {certfile} and tls_keyfile {keyfile} cannot be "
                            f"used together ({err.reason or err}); does the key belong "
                            "to the certificate?") from None
    except OSError as err:
        raise TLSSetupError(f"cannot read tls_certfile {certfile} or tls_keyfile "
                            f"{keyfile}: {err.strerror or err}") from None
    if config.tls_require_client_cert:
        assert config.tls_cafile is not None  # checked by the configuration loader
        _read_pem("tls_cafile", config.tls_cafile)
        try:
            context.load_verify_locations(cafile=str(config.tls_cafile))
        except (ssl.SSLError, OSError) as err:
            raise TLSSetupError(f"tls_cafile {config.tls_cafile} holds no usable PEM CA "
                                f"certificate ({getattr(err, 'reason', None) or err})") \
                from None
        context.verify_mode = ssl.CERT_REQUIRED
    log.info("TLS enabled with certificate %s%s", certfile,
             ", client certificates required" if config.tls_require_client_cert else "")
    return context


__all__ = ["TLSSetupError", "server_context"]
