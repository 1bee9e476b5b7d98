"""Fixtures for the GUI tests: a real daemon process and the main window, offscreen.

- ``rsa_key_file``, ``gui_accounts`` (session): one 0600 key and scrypt-hashed users
  (hashing is slow, so both are made once).
- ``gui_daemon`` (session): one daemon with the demo setup; each test that uses
  ``window`` leaves it idle again.
- ``new_gui_daemon``: a daemon of the test's own (the reconnect test stops it).
- ``window``: a MainWindow with its own settings file, connected as admin.
"""

from __future__ import annotations

import os

os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')

from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import rsa  # noqa: E402
from guidaemon import PASSWORDS, Account, GuiDaemon  # noqa: E402

from nicos_daemon.auth.passwords import hash_password  # noqa: E402

WAIT_MS = 15000  # a guard for waitUntil; never reached when the tests pass


@pytest.fixture(scope='session')
def rsa_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('guikey') / 'daemon_rsa.pem'
    _public, private = rsa.newkeys(2048)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'wb') as keyfile:
        keyfile.write(private.save_pkcs1())
    os.chmod(path, 0o600)
    return path


@pytest.fixture(scope='session')
def gui_accounts() -> list[Account]:
    return [Account(name, password, level, hash_password(password))
            for name, (password, level) in PASSWORDS.items()]


@pytest.fixture(scope='session')
def new_gui_daemon(tmp_path_factory: pytest.TempPathFactory, rsa_key_file: Path,
                   gui_accounts: list[Account]) -> Iterator[Callable[[], GuiDaemon]]:
    started: list[GuiDaemon] = []

    def make() -> GuiDaemon:
        daemon = GuiDaemon(tmp_path_factory.mktemp('guidaemon'), rsa_key_file, gui_accounts)
        started.append(daemon)
        return daemon.start()

    yield make
    for daemon in started:
        daemon.stop()


@pytest.fixture(scope='session')
def gui_daemon(new_gui_daemon: Callable[[], GuiDaemon]) -> GuiDaemon:
    return new_gui_daemon()


@pytest.fixture()
def settings_file(tmp_path: Path) -> Path:
    return tmp_path / 'nicos-gui.ini'


@pytest.fixture()
def make_window(qtbot, settings_file: Path) -> Iterator[Callable[..., object]]:
    """``make_window(daemon, user='admin', viewonly=False, connect=True)``."""
    from PyQt5.QtCore import QSettings

    from nicos.clients.gui.client import ConnectionParams
    from nicos.clients.gui.mainwindow import MainWindow

    windows: list[MainWindow] = []

    def make(daemon: GuiDaemon | None = None, user: str = 'admin', viewonly: bool = False,
             connect: bool = True) -> MainWindow:
        settings = QSettings(str(settings_file), QSettings.IniFormat)
        window = MainWindow(settings)
        qtbot.addWidget(window)
        window.show()
        windows.append(window)
        if connect and daemon is not None:
            params = ConnectionParams('127.0.0.1', daemon.port, user, viewonly)
            window.client.connect_to(params, PASSWORDS[user][0])
            qtbot.waitUntil(lambda: window.client.is_connected, timeout=WAIT_MS)
        return window

    yield make
    for window in windows:
        window.editor.edit.document().setModified(False)
        window.close()


@pytest.fixture()
def window(make_window: Callable[..., object], gui_daemon: GuiDaemon) -> Iterator[object]:
    """The main window connected as admin; afterwards the daemon is made idle."""
    yield make_window(gui_daemon)
    if gui_daemon.alive():
        gui_daemon.make_idle()
