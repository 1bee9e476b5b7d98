"""Salted, slow password hashes for the ``list`` authenticator.

Stored format (self-describing, so parameters can be raised later without breaking old
entries)::

    scrypt$n=16384,r=8,p=1$<base64 salt>$<base64 hash>
"""

import base64
import binascii
import getpass
import hashlib
import hmac
import os
import sys
import unicodedata
from dataclasses import dataclass
from typing import TextIO

SCHEME = "scrypt"
DEFAULT_N = 2**14
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32

# Limits for parameters read back from a stored hash, so that a mistyped config entry
# cannot make each login allocate gigabytes or spin for minutes.
_MAX_N = 2**20
_MAX_R = 32
_MAX_P = 16
_MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
_SALT_RANGE = range(8, 65)
_HASH_RANGE = range(16, 65)

MIN_PASSWORD_CHARS = 8
# The login exchange RSA-encrypts the password with PKCS#1 v1.5, which carries at most
# key bytes - 11; 2048 bits is the smallest key the daemon accepts.
MAX_PASSWORD_BYTES = 2048 // 8 - 11
# Long passphrases are strong even when they use a single character class (NIST SP
# 800-63B discourages composition rules), so the class rule stops applying here.
PASSPHRASE_CHARS = 16
_MAX_INPUT_CHARS = 4096


@dataclass(frozen=True)
class _ScryptHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def _password_bytes(password: str) -> bytes:
    # Different clients may send the same visible text in composed or decomposed form.
    return unicodedata.normalize("NFC", password).encode("utf-8")


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    maxmem = 128 * r * (n + p) + 1024 * 1024
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _parse_params(text: str) -> tuple[int, int, int]:
    params: dict[str, int] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or key in params or not value.isdigit() or len(value) > 8:
            raise ValueError("malformed scrypt parameters")
        params[key] = int(value)
    if set(params) != {"n", "r", "p"}:
        raise ValueError("scrypt parameters must be exactly n, r, p")
    n, r, p = params["n"], params["r"], params["p"]
    if n < 2 or n > _MAX_N or n & (n - 1):
        raise ValueError("scrypt n must be a power of two within limits")
    if not (1 <= r <= _MAX_R and 1 <= p <= _MAX_P) or 128 * r * n > _MAX_SCRYPT_MEMORY:
        raise ValueError("scrypt r/p out of limits")
    return n, r, p


def _parse(stored: str) -> _ScryptHash:
    parts = stored.split("$")
    if len(parts) != 4 or parts[0] != SCHEME:
        raise ValueError(f"not a {SCHEME} hash")
    n, r, p = _parse_params(parts[1])
    try:
        salt = base64.b64decode(parts[2], validate=True)
        digest = base64.b64decode(parts[3], validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError("salt or hash is not valid base64") from err
    if len(salt) not in _SALT_RANGE or len(digest) not in _HASH_RANGE:
        raise ValueError("salt or hash has an unsupported length")
    return _ScryptHash(n, r, p, salt, digest)


def hash_problem(stored: str) -> str | None:
    """Why ``stored`` is not a usable hash, or None if it is (used by config validation)."""
    if not isinstance(stored, str) or not stored:
        return "the hash is empty"
    try:
        _parse(stored)
    except ValueError as err:
        return f"{err} (expected {SCHEME}$n=...,r=...,p=...$<salt>$<hash>)"
    return None


def hash_password(password: str) -> str:
    """Hash a password with scrypt and a fresh random 16-byte salt."""
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(_password_bytes(password), salt, DEFAULT_N, DEFAULT_R, DEFAULT_P, HASH_BYTES)
    return f"{SCHEME}$n={DEFAULT_N},r={DEFAULT_R},p={DEFAULT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored``; any malformed input gives False, never raises."""
    try:
        parsed = _parse(stored)
        candidate = _scrypt(
            _password_bytes(password), parsed.salt, parsed.n, parsed.r, parsed.p,
            len(parsed.digest),
        )
    except (ValueError, TypeError, AttributeError, MemoryError):
        return False
    return hmac.compare_digest(candidate, parsed.digest)


def password_problem(password: str) -> str | None:
    """A human-readable reason why ``password`` is too weak, or None if acceptable."""
    if not password:
        return "the password is empty"
    if len(password) < MIN_PASSWORD_CHARS:
        return f"the password is shorter than {MIN_PASSWORD_CHARS} characters"
    try:
        encoded = _password_bytes(password)
    except UnicodeEncodeError:
        return "the password contains characters that are not valid text"
    if len(encoded) > MAX_PASSWORD_BYTES:
        return (
            f"the password is longer than {MAX_PASSWORD_BYTES} bytes, more than the "
            "encrypted login exchange can carry"
        )
    if len(password) < PASSPHRASE_CHARS:
        classes = {
            "lower" if ch.islower() else "upper" if ch.isupper()
            else "digit" if ch.isdigit() else "other"
            for ch in password
        }
        if len(classes) == 1:
            return (
                "the password uses only one kind of character; mix letters, digits and "
                f"symbols, or use a passphrase of at least {PASSPHRASE_CHARS} characters"
            )
    return None


def _prompt(prompt: str, stdin: TextIO | None, stdout: TextIO) -> str:
    if stdin is None:
        if sys.stdin.isatty():
            return getpass.getpass(prompt, stream=stdout)
        stdin = sys.stdin
    # Not a terminal (a pipe or a test): nothing is echoed, so read the line directly.
    stdout.write(prompt)
    stdout.flush()
    line = stdin.readline(_MAX_INPUT_CHARS + 1)
    if not line:
        raise EOFError
    return line.rstrip("\r\n")


OVERRIDE_FLAG = "--allow-weak-passwords"


def _too_long(password: str) -> bool:
    try:
        return len(_password_bytes(password)) > MAX_PASSWORD_BYTES
    except UnicodeEncodeError:
        return True  # not valid text: no client could send it either


def hash_password_interactive(stdin: TextIO | None = None, stdout: TextIO | None = None,
                              allow_weak: bool = False) -> int:
    """Ask for a password twice and print the config line holding its hash.

    Returns a process exit code: 0 on success, 1 if the entries differ, the password
    is too weak, or input ended early. With ``allow_weak`` a weak password is hashed
    anyway (with a warning), and an empty one gives the passwordless entry
    ``hash = ""``, which the daemon accepts only with ``allow_weak_passwords``.
    A password no client could send (too long, not text) is refused regardless.
    """
    out = stdout if stdout is not None else sys.stdout
    try:
        first = _prompt("New password: ", stdin, out)
        second = _prompt("Repeat password: ", stdin, out)
    except (EOFError, KeyboardInterrupt):
        out.write("\nAborted, no hash printed.\n")
        return 1
    if not hmac.compare_digest(first.encode("utf-8", "surrogatepass"),
                               second.encode("utf-8", "surrogatepass")):
        out.write("The two entries differ, no hash printed.\n")
        return 1
    problem = password_problem(first)
    unsendable = _too_long(first)
    if problem is not None and (unsendable or not allow_weak):
        hint = "" if unsendable else f" ({OVERRIDE_FLAG} hashes it anyway; not recommended)"
        out.write(f"Refused: {problem}{hint}.\n")
        return 1
    if problem is not None:
        out.write(f"Warning: {problem}; accepted because of {OVERRIDE_FLAG}.\n")
    if not first:
        # Shown as such in the configuration, where allow_weak_passwords must accept it.
        out.write("Paste this line into the user's [passwd.<name>] table; the daemon "
                  "accepts it only with allow_weak_passwords = true:\n")
        out.write('hash = ""\n')
        return 0
    out.write("Paste this line into the user's [passwd.<name>] table:\n")
    out.write(f'hash = "{hash_password(first)}"\n')
    return 0
