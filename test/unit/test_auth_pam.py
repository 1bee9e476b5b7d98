"""PAM back-end, against real throwaway Unix accounts (needs root)."""

import logging
import os
import pwd
import secrets
import shutil
import subprocess

import pytest

from nicos_daemon.auth import AuthError, AuthResult
from nicos_daemon.auth.levels import ADMIN, GUEST, USER
from nicos_daemon.auth.pamauth import PamAuthenticator, level_from_gecos

ACCOUNT_TOOLS = ("useradd", "chpasswd", "usermod", "userdel")
SERVICE = "login"  # python-pam's default, present on Debian as /etc/pam.d/login


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return ("PAM TESTS SKIPPED: creating throwaway Unix users needs root, and pam_unix "
                "run as a normal user can only check that user's own password")
    missing = [tool for tool in ACCOUNT_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"PAM TESTS SKIPPED: account tools missing: {', '.join(missing)}"
    return None


needs_root = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def _run(*args: str, stdin: str | None = None) -> None:
    subprocess.run(args, input=stdin, text=True, check=True, capture_output=True)


def _set_gecos(name: str, gecos: str) -> None:
    _run("usermod", "-c", gecos, name)


@pytest.fixture
def account():
    """A new Unix user with a random password and GECOS "access=20"; always removed."""
    name = f"nicostest_{secrets.token_hex(4)}"
    password = f"Pw-{secrets.token_urlsafe(12)}"
    _run("useradd", "--create-home", "--shell", "/usr/sbin/nologin", name)
    try:
        _run("chpasswd", stdin=f"{name}:{password}\n")
        _set_gecos(name, "access=20")
        yield name, password
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True, check=False)
        try:
            pwd.getpwnam(name)
        except KeyError:
            pass
        else:
            pytest.fail(f"could not remove test user {name}; remove it by hand")


@needs_root
def test_correct_password_gives_level_from_gecos(account):
    name, password = account
    result = PamAuthenticator(SERVICE, GUEST).authenticate(name, password)
    assert result == AuthResult(name, ADMIN)


@needs_root
def test_wrong_password_is_refused_and_pam_reason_only_logged(account, caplog):
    name, password = account
    caplog.set_level(logging.INFO, logger="nicos_daemon.auth.pam")
    with pytest.raises(AuthError) as info:
        PamAuthenticator(SERVICE, GUEST).authenticate(name, password + "x")
    assert str(info.value) == "Invalid username or password!"
    assert "Authentication failure" in caplog.text
    assert "Authentication failure" not in str(info.value)


@needs_root
def test_without_access_token_the_default_level_applies(account):
    name, password = account
    _set_gecos(name, "Test User")
    assert PamAuthenticator(SERVICE, USER).authenticate(name, password).level == USER


@needs_root
def test_access_outside_the_full_name_field_is_ignored(account):
    # Room and phone fields are often user-editable with chfn; they must not grant levels.
    name, password = account
    _set_gecos(name, "Test User,access=20")
    assert PamAuthenticator(SERVICE, GUEST).authenticate(name, password).level == GUEST


@needs_root
def test_unknown_user_is_refused_with_the_same_message():
    with pytest.raises(AuthError, match="^Invalid username or password!$"):
        PamAuthenticator(SERVICE, GUEST).authenticate(
            f"nicostest_absent_{secrets.token_hex(4)}", "Whatever-1")


@pytest.mark.parametrize("login, password", [("root", "pw\0with-nul"), ("", "x"),
                                             ("root", "x" * 5000), ("root", None),
                                             (["root"], "x")])
def test_unusable_input_is_refused_before_pam(login, password):
    with pytest.raises(AuthError, match="^Invalid username or password!$"):
        PamAuthenticator(SERVICE, GUEST).authenticate(login, password)


@pytest.mark.parametrize("gecos, level", [
    ("access=20", ADMIN),
    ("Jane Doe access=10", USER),
    ("access=0,room 1", GUEST),
    ("Jane Doe", USER),
    ("", USER),
    ("access=15", USER),
    ("noaccess=20", USER),
    ("access=200", USER),
    ("Jane,access=20", USER),
    ("Jane,,,access=20", USER),
])
def test_level_from_gecos(gecos, level):
    assert level_from_gecos(gecos, USER) == level
