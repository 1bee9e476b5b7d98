"""Users without a password or with a weak one, and the explicit overrides.

The configuration holds salted hashes, so a weak password can only be caught when its
hash is made (``nicos-daemon --hash-password``); an empty hash (no password) is caught
when the configuration is loaded. Both are refused unless explicitly overridden
(``--allow-weak-passwords`` and ``allow_weak_passwords = true``).
"""

from __future__ import annotations

import io
import logging
import re
import sys
from pathlib import Path

import pytest

from nicos_daemon import main as main_module
from nicos_daemon.auth import AuthError
from nicos_daemon.auth.listauth import ListAuthenticator
from nicos_daemon.auth.passwords import (
    MAX_PASSWORD_BYTES,
    hash_password,
    hash_password_interactive,
    verify_password,
)
from nicos_daemon.config import ConfigError, load_config

HASH = hash_password("Good-pass-1")
HASH_LINE = re.compile(r'^hash = "([^"]*)"$', re.MULTILINE)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "daemon.toml"
    path.write_text(text)
    return path


PASSWORDLESS = f"""
[passwd.alice]
hash = "{HASH}"
level = "admin"

[passwd.kiosk]
hash = ""
level = "guest"
"""


# -- configuration ----------------------------------------------------------------------


def test_user_without_password_is_refused_with_the_override_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, PASSWORDLESS))
    message = str(info.value)
    assert "passwd.kiosk.hash" in message and "empty" in message
    assert "--hash-password" in message and "allow_weak_passwords = true" in message
    assert "alice" not in message


@pytest.mark.parametrize("authmethod", ["pam", "none"])
def test_user_without_password_is_refused_whatever_the_authmethod(
        tmp_path: Path, authmethod: str) -> None:
    with pytest.raises(ConfigError, match="passwd.kiosk.hash"):
        load_config(write(tmp_path, f'authmethod = "{authmethod}"\n{PASSWORDLESS}'))


def test_override_in_the_file_accepts_it_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="nicos_daemon.config"):
        config = load_config(write(tmp_path, "allow_weak_passwords = true\n" + PASSWORDLESS))
    assert config.allow_weak_passwords is True
    assert config.passwd["kiosk"].hash == ""
    assert config.passwd["alice"].hash == HASH
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'kiosk' has no password" in text for text in warnings), warnings
    assert not any("alice" in text for text in warnings)


def test_override_from_the_command_line_side(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, PASSWORDLESS), {"allow_weak_passwords": True})
    assert config.passwd["kiosk"].hash == ""
    with pytest.raises(ConfigError, match="passwd.kiosk.hash"):
        load_config(write(tmp_path, "allow_weak_passwords = true\n" + PASSWORDLESS),
                    {"allow_weak_passwords": False})


def test_missing_hash_is_refused_even_with_the_override(tmp_path: Path) -> None:
    text = '[passwd.kiosk]\nlevel = "guest"\n'
    for prefix in ("", "allow_weak_passwords = true\n"):
        with pytest.raises(ConfigError, match="missing 'hash'") as info:
            load_config(write(tmp_path, prefix + text))
        assert "--hash-password" in str(info.value) and 'hash = ""' in str(info.value)


def test_override_does_not_admit_malformed_hashes(tmp_path: Path) -> None:
    legacy = "5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8"
    with pytest.raises(ConfigError, match="passwd.kiosk.hash"):
        load_config(write(tmp_path, 'allow_weak_passwords = true\n'
                                    f'[passwd.kiosk]\nhash = "{legacy}"\nlevel = 0\n'))


@pytest.mark.parametrize("value", ['"yes"', "1"])
def test_override_must_be_a_boolean(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="allow_weak_passwords"):
        load_config(write(tmp_path, f"allow_weak_passwords = {value}\n"))


# -- logging in as a user without a password --------------------------------------------


def test_passwordless_user_logs_in_with_the_empty_password_only() -> None:
    auth = ListAuthenticator({"kiosk": ("", 0), "alice": (HASH, 20)})
    assert auth.authenticate("kiosk", "").level == 0
    # Upstream would accept any password here; that is exactly what must not happen.
    for wrong in ("x", " ", "Good-pass-1"):
        with pytest.raises(AuthError):
            auth.authenticate("kiosk", wrong)
    # other users are not affected
    with pytest.raises(AuthError):
        auth.authenticate("alice", "")
    assert auth.authenticate("alice", "Good-pass-1").level == 20


# -- nicos-daemon --hash-password ---------------------------------------------------------


def interactive(text: str, allow_weak: bool = False) -> tuple[int, str]:
    out = io.StringIO()
    code = hash_password_interactive(stdin=io.StringIO(text), stdout=out,
                                     allow_weak=allow_weak)
    return code, out.getvalue()


@pytest.mark.parametrize("password, fragment", [
    ("", "empty"),
    ("abc1", "shorter than 8"),
    ("abcdefghij", "one kind of character"),
])
def test_weak_password_is_refused_and_the_override_named(password: str,
                                                          fragment: str) -> None:
    code, output = interactive(f"{password}\n{password}\n")
    assert code == 1
    assert fragment in output and "--allow-weak-passwords" in output
    assert HASH_LINE.search(output) is None


@pytest.mark.parametrize("password", ["abc1", "abcdefghij"])
def test_weak_password_is_hashed_with_the_override_and_a_warning(password: str) -> None:
    code, output = interactive(f"{password}\n{password}\n", allow_weak=True)
    assert code == 0
    assert output.count("Warning:") == 1
    match = HASH_LINE.search(output)
    assert match is not None and verify_password(password, match.group(1))


def test_empty_password_with_the_override_gives_the_passwordless_entry(
        tmp_path: Path) -> None:
    code, output = interactive("\n\n", allow_weak=True)
    assert code == 0 and "allow_weak_passwords = true" in output
    match = HASH_LINE.search(output)
    assert match is not None and match.group(1) == ""
    # the printed line is what the configuration expects, with the override
    entry = f"[passwd.kiosk]\n{match.group(0)}\nlevel = 0\n"
    with pytest.raises(ConfigError, match="allow_weak_passwords"):
        load_config(write(tmp_path, entry))
    config = load_config(write(tmp_path, "allow_weak_passwords = true\n" + entry))
    assert config.passwd["kiosk"].hash == ""


def test_override_does_not_admit_a_password_no_client_can_send() -> None:
    too_long = "Ab1-" * (MAX_PASSWORD_BYTES // 4 + 1)
    code, output = interactive(f"{too_long}\n{too_long}\n", allow_weak=True)
    assert code == 1 and "longer than" in output
    assert "--allow-weak-passwords" not in output  # it would not help
    assert HASH_LINE.search(output) is None


def test_override_does_not_skip_the_repetition_check() -> None:
    code, output = interactive("abc1\nabc2\n", allow_weak=True)
    assert code == 1 and "differ" in output and HASH_LINE.search(output) is None


def test_command_line_option(monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\nshort\n"))
    assert main_module.main(["--hash-password"]) == 1
    assert "--allow-weak-passwords" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\nshort\n"))
    assert main_module.main(["--hash-password", "--allow-weak-passwords"]) == 0
    match = HASH_LINE.search(capsys.readouterr().out)
    assert match is not None and verify_password("short", match.group(1))


def test_command_line_option_alone_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    # The daemon's own override is the configuration key; a silently ignored option
    # would let someone believe it worked.
    with pytest.raises(SystemExit) as info:
        main_module.main(["--allow-weak-passwords"])
    assert info.value.code == 2
    assert "allow_weak_passwords = true" in capsys.readouterr().err
