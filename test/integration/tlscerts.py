"""Throw-away TLS certificates for tests, made with the openssl command line.

The ``cryptography`` package is not a dependency of this project, so the certificates
come from ``openssl req -x509``, the same command docs/configuration.md gives to labs.
Without an openssl binary the TLS tests are skipped with a loud reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

OPENSSL_TIMEOUT = 60.0
SKIP_REASON = ("NO TLS TESTS RUN: the 'openssl' command line tool was not found, so no test "
               "certificates can be made (install openssl to run them)")


@dataclass(frozen=True)
class CertPair:
    cert: Path  # PEM certificate; self-signed, so it is also the CA file to trust
    key: Path  # PEM private key, unencrypted, mode 0600


def openssl_or_skip() -> str:
    """The openssl executable, or skip the calling test loudly."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip(SKIP_REASON)
    return openssl


def self_signed(directory: Path, name: str, common_name: str = "localhost",
                alt_names: str = "DNS:localhost,IP:127.0.0.1",
                extra: tuple[str, ...] = ()) -> CertPair:
    """A self-signed certificate valid for *alt_names* (subjectAltName syntax)."""
    openssl = openssl_or_skip()
    directory.mkdir(parents=True, exist_ok=True)
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    result = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-sha256", "-days", "2",
         "-nodes", "-keyout", str(pair.key), "-out", str(pair.cert),
         "-subj", f"/CN={common_name}", "-addext", f"subjectAltName={alt_names}", *extra],
        capture_output=True, text=True, timeout=OPENSSL_TIMEOUT)
    assert result.returncode == 0, f"openssl req failed:\n{result.stderr}"
    os.chmod(pair.key, 0o600)  # whatever openssl and the umask did
    return pair


__all__ = ["CertPair", "SKIP_REASON", "openssl_or_skip", "self_signed"]
