"""TLS in the GUI: the connect dialog's "Use TLS" and CA file, remembered in profiles,
and a real connection to a daemon that accepts only TLS.

The certificate comes from the openssl command line; without it these tests are
skipped with a loud reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from guidaemon import PASSWORDS, GuiDaemon
from PyQt5.QtCore import QSettings, Qt

from nicos.clients.gui.client import ConnectionParams, ConnState
from nicos.clients.gui.connect import load_profiles

WAIT_MS = 15000


@pytest.fixture(scope='module')
def daemon_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which('openssl')
    if openssl is None:
        pytest.skip("NO TLS TESTS RUN: the 'openssl' command line tool was not found, so no "
                    'test certificate can be made (install openssl to run them)')
    directory = tmp_path_factory.mktemp('guitls')
    cert, key = directory / 'daemon.crt', directory / 'daemon.key'
    result = subprocess.run(
        [openssl, 'req', '-x509', '-newkey', 'rsa:2048', '-sha256', '-days', '2', '-nodes',
         '-keyout', str(key), '-out', str(cert), '-subj', '/CN=localhost',
         '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    os.chmod(key, 0o600)
    return cert, key


@pytest.fixture(scope='module')
def tls_gui_daemon(tmp_path_factory: pytest.TempPathFactory, rsa_key_file: Path,
                   gui_accounts: list, daemon_cert: tuple[Path, Path]) -> Iterator[GuiDaemon]:
    cert, key = daemon_cert
    daemon = GuiDaemon(tmp_path_factory.mktemp('guitlsdaemon'), rsa_key_file, gui_accounts,
                       tls_certfile=str(cert), tls_keyfile=str(key))
    daemon.start()
    yield daemon
    daemon.stop()


def test_dialog_connects_with_tls_and_remembers_it(make_window, tls_gui_daemon: GuiDaemon,
                                                   daemon_cert: tuple[Path, Path], qtbot,
                                                   settings_file: Path) -> None:
    cert, _key = daemon_cert
    window = make_window(connect=False)
    dialog = window.show_connect_dialog()
    assert not dialog.tls.isChecked() and not dialog.tls_ca.isEnabled()  # off by default
    dialog.profile.setEditText('tls daemon')
    dialog.host.setText('127.0.0.1')
    dialog.port.setValue(tls_gui_daemon.port)
    dialog.user.setText('user')
    dialog.tls.setChecked(True)
    assert dialog.tls_ca.isEnabled()
    dialog.tls_ca.setText(str(cert))
    qtbot.mouseClick(dialog.save_button, Qt.LeftButton)
    dialog.password.setText(PASSWORDS['user'][0])
    qtbot.mouseClick(dialog.connect_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: window.client.is_connected, timeout=WAIT_MS)
    assert window.client.user_level == 10

    profiles = load_profiles(QSettings(str(settings_file), QSettings.IniFormat))
    assert profiles['tls daemon'] == ConnectionParams(
        '127.0.0.1', tls_gui_daemon.port, 'user', tls=True, tls_ca=str(cert))
    again = window.show_connect_dialog()
    assert again.tls.isChecked() and again.tls_ca.text() == str(cert)
    again.close()
    window.client.disconnect_from()


@pytest.mark.parametrize('tls, expected', [
    (False, 'accepts only TLS'),
    (True, 'certificate verification failed'),  # the system CAs do not know it
])
def test_refusals_are_reported(make_window, tls_gui_daemon: GuiDaemon, qtbot, tls: bool,
                               expected: str) -> None:
    window = make_window(connect=False)
    window.client.connect_to(ConnectionParams('127.0.0.1', tls_gui_daemon.port, 'admin',
                                              tls=tls), PASSWORDS['admin'][0])
    qtbot.waitUntil(lambda: window.client.last_error != '', timeout=WAIT_MS)
    assert window.client.conn_state is ConnState.DISCONNECTED
    assert expected in window.client.last_error


def test_missing_ca_file_is_caught_in_the_dialog(make_window, qtbot, tmp_path: Path) -> None:
    window = make_window(connect=False)
    dialog = window.show_connect_dialog()
    requests: list[object] = []
    dialog.connectRequested.connect(lambda params, _password: requests.append(params))
    dialog.host.setText('127.0.0.1')
    dialog.user.setText('user')
    dialog.tls.setChecked(True)
    dialog.tls_ca.setText(str(tmp_path / 'absent.pem'))
    qtbot.mouseClick(dialog.connect_button, Qt.LeftButton)
    assert 'does not exist' in dialog.message.text()
    assert requests == [] and dialog.isVisible()
    dialog.close()
