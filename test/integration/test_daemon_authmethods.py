"""Each login method through a real daemon process: none, pam, and trusted hosts.

(The list method is what the other daemon tests use.)  The PAM test creates a
throwaway Unix user and removes it again; it needs root and says so loudly
when skipped.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest
from daemonproc import DaemonProcess

from nicos.clients.base import LoginFailed
from nicos.protocols.daemon import ADMIN, USER

PAM_SKIP = None
if os.geteuid() != 0:
    PAM_SKIP = "PAM LOGIN TEST SKIPPED: creating a throwaway Unix user needs root"
elif not all(shutil.which(tool) for tool in ("useradd", "chpasswd", "usermod", "userdel")):
    PAM_SKIP = "PAM LOGIN TEST SKIPPED: useradd/chpasswd/usermod/userdel not available"


def test_authmethod_none_lets_anyone_in_as_admin(
        new_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = new_daemon("noauth", authmethod="none")
    client = daemon.connect("whoever", password="anything at all")
    try:
        assert client.user_level == ADMIN
        assert client.eval("1 + 1") == 2
    finally:
        client.disconnect()
    daemon.stop_and_check()


def test_untrusted_host_gets_permission_denied(
        new_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = new_daemon("untrusted", trustedhosts=["10.0.0.0/8"])
    with pytest.raises(LoginFailed, match="permission denied"):
        daemon.connect("admin")
    daemon.stop_and_check()


@pytest.fixture
def unix_user() -> Iterator[tuple[str, str]]:
    name = f"nicosit_{secrets.token_hex(4)}"
    password = f"Pw-{secrets.token_urlsafe(12)}"
    subprocess.run(["useradd", "--shell", "/usr/sbin/nologin", name], check=True,
                   capture_output=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True,
                       capture_output=True)
        subprocess.run(["usermod", "-c", f"access={USER}", name], check=True,
                       capture_output=True)
        yield name, password
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True, check=False)


@pytest.mark.skipif(PAM_SKIP is not None, reason=str(PAM_SKIP))
def test_pam_login_through_the_daemon(new_daemon: Callable[..., DaemonProcess],
                                      unix_user: tuple[str, str]) -> None:
    name, password = unix_user
    daemon = new_daemon("pam", authmethod="pam")
    client = daemon.connect(name, password=password)
    try:
        assert client.user_level == USER  # from access=10 in the account's GECOS field
    finally:
        client.disconnect()
    with pytest.raises(LoginFailed, match="Invalid username or password"):
        daemon.connect(name, password=password + "x")
    daemon.stop_and_check()
