"""scrypt password hashes, strength check and the interactive hash helper."""

import base64
import hashlib
import io
import re

import pytest

from nicos_daemon.auth.passwords import (
    hash_password,
    hash_password_interactive,
    hash_problem,
    password_problem,
    verify_password,
)

PASSWORD = "Tr0ub4dor&3"
STORED = hash_password(PASSWORD)
FORMAT = re.compile(r"scrypt\$n=16384,r=8,p=1\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)")


def test_format_and_round_trip():
    match = FORMAT.fullmatch(STORED)
    assert match is not None
    assert len(base64.b64decode(match.group(1))) == 16
    assert verify_password(PASSWORD, STORED)


def test_stored_value_is_plain_scrypt_of_the_utf8_password():
    # Pins the format: another implementation must be able to check our hashes.
    match = FORMAT.fullmatch(STORED)
    salt, digest = (base64.b64decode(part) for part in match.groups())
    expected = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=16384, r=8, p=1, dklen=32)
    assert digest == expected


def test_salt_differs_between_hashes():
    assert hash_password(PASSWORD) != hash_password(PASSWORD)


@pytest.mark.parametrize("attempt", ["tr0ub4dor&3", "Tr0ub4dor&", "", PASSWORD + " "])
def test_wrong_password(attempt):
    assert not verify_password(attempt, STORED)


def _replace_part(stored: str, index: int, new: str) -> str:
    parts = stored.split("$")
    parts[index] = new
    return "$".join(parts)


def _flip_first_byte(b64: str) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def test_tampered_digest_fails():
    tampered = _replace_part(STORED, 3, _flip_first_byte(STORED.split("$")[3]))
    assert not verify_password(PASSWORD, tampered)


def test_tampered_salt_fails():
    tampered = _replace_part(STORED, 2, _flip_first_byte(STORED.split("$")[2]))
    assert not verify_password(PASSWORD, tampered)


def test_tampered_parameters_fail():
    assert not verify_password(PASSWORD, _replace_part(STORED, 1, "n=8192,r=8,p=1"))


@pytest.mark.parametrize("stored", [
    "",
    "5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8",
    "$2b$12$abcdefghijklmnopqrstuv",
    "bcrypt$n=16384,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
    "scrypt$n=16384,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==",
    "scrypt$n=16384,r=8$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
    "scrypt$n=16384,r=8,p=1,p=2$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
    "scrypt$n=1000,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
    "scrypt$n=1073741824,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
    "scrypt$n=16384,r=8,p=1$not*base64$" + "A" * 44,
    "scrypt$n=16384,r=8,p=1$AAAA$" + "A" * 44,
    None,
    12345,
])
def test_unknown_or_malformed_format_is_false_not_an_exception(stored):
    assert verify_password(PASSWORD, stored) is False
    assert hash_problem(stored) is not None


def test_hash_problem_accepts_our_hashes():
    assert hash_problem(STORED) is None


def test_unencodable_password_is_false_not_an_exception():
    assert verify_password("\ud800abc", STORED) is False


def test_composed_and_decomposed_forms_match():
    stored = hash_password("caf\u00e9-Latte1")
    assert verify_password("cafe\u0301-Latte1", stored)


@pytest.mark.parametrize("password, fragment", [
    ("", "empty"),
    ("Ab1!", "shorter than 8"),
    ("abcdefgh", "one kind"),
    ("12345678", "one kind"),
    ("ABCDEFGHIJ", "one kind"),
    ("é" * 130, "longer than 245 bytes"),
    ("\ud800" * 8, "not valid text"),
])
def test_weak_passwords(password, fragment):
    problem = password_problem(password)
    assert problem is not None and fragment in problem


@pytest.mark.parametrize("password", ["abcd1234", "Abcdefgh", "correcthorsebatterystaple"])
def test_acceptable_passwords(password):
    assert password_problem(password) is None


def _interactive(text: str) -> tuple[int, str]:
    out = io.StringIO()
    code = hash_password_interactive(stdin=io.StringIO(text), stdout=out)
    return code, out.getvalue()


def test_interactive_prints_a_working_config_line():
    code, output = _interactive("Good-pass-1\nGood-pass-1\n")
    assert code == 0
    match = re.search(r'^hash = "(scrypt\$[^"]+)"$', output, re.MULTILINE)
    assert match is not None
    assert verify_password("Good-pass-1", match.group(1))


@pytest.mark.parametrize("text, fragment", [
    ("Good-pass-1\nGood-pass-2\n", "differ"),
    ("short\nshort\n", "shorter than 8"),
    ("Good-pass-1\n", "Aborted"),
    ("", "Aborted"),
])
def test_interactive_refusals_print_no_hash(text, fragment):
    code, output = _interactive(text)
    assert code == 1
    assert fragment in output
    assert "scrypt$" not in output
