"""The connect dialog and the remembered connection profiles.

Profiles live in the settings under ``profiles/<name>`` (host, port, user,
view-only, TLS and its CA file).  Passwords are never stored.
"""

from __future__ import annotations

import getpass
import os
import re

from PyQt5.QtCore import QSettings, Qt, pyqtSignal
from PyQt5.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from nicos.protocols.daemon import DEFAULT_PORT

from .client import ConnectionParams

PROFILE_GROUP = 'profiles'
_ADDRESS = re.compile(r'^(?:(?P<user>[^@]+)@)?(?P<host>\[[^\]]+\]|[^:\[\]]+)(?::(?P<port>\d+))?$')


def parse_address(text: str, default_user: str = '') -> ConnectionParams:
    """``[user@]host[:port]`` (IPv6 hosts in brackets) -> ConnectionParams."""
    match = _ADDRESS.match(text.strip())
    if match is None:
        raise ValueError(f'not an address: {text!r}; use [USER@]HOST[:PORT]')
    port = int(match.group('port') or DEFAULT_PORT)
    if not 0 < port < 65536:
        raise ValueError(f'port out of range: {port}')
    return ConnectionParams(host=match.group('host').strip('[]'), port=port,
                            user=match.group('user') or default_user)


def _as_bool(value: object) -> bool:
    # QSettings gives back booleans as strings with some back-ends (INI files).
    return str(value).lower() in ('true', '1')


def load_profiles(settings: QSettings) -> dict[str, ConnectionParams]:
    profiles: dict[str, ConnectionParams] = {}
    settings.beginGroup(PROFILE_GROUP)
    try:
        for name in settings.childGroups():
            settings.beginGroup(name)
            try:
                port = int(settings.value('port', DEFAULT_PORT))
                viewonly = _as_bool(settings.value('viewonly', 'false'))
                profiles[name] = ConnectionParams(
                    host=str(settings.value('host', 'localhost')), port=port,
                    user=str(settings.value('user', '')), viewonly=viewonly,
                    tls=_as_bool(settings.value('tls', 'false')),
                    tls_ca=str(settings.value('tls_ca', '') or ''))
            except (TypeError, ValueError):
                pass
            finally:
                settings.endGroup()
    finally:
        settings.endGroup()
    return profiles


def save_profile(settings: QSettings, name: str, params: ConnectionParams) -> None:
    settings.beginGroup(f'{PROFILE_GROUP}/{name}')
    settings.setValue('host', params.host)
    settings.setValue('port', params.port)
    settings.setValue('user', params.user)
    settings.setValue('viewonly', params.viewonly)
    settings.setValue('tls', params.tls)
    settings.setValue('tls_ca', params.tls_ca)
    settings.endGroup()
    settings.setValue('lastprofile', name)
    settings.sync()


def delete_profile(settings: QSettings, name: str) -> None:
    settings.remove(f'{PROFILE_GROUP}/{name}')
    settings.sync()


class ConnectDialog(QDialog):
    """Host, port, user, password, view-only, TLS, and named profiles.

    Emits ``connectRequested(params, password)``; non-modal, so that the
    main window (and its emergency stop) stays usable.
    """

    connectRequested = pyqtSignal(object, str)

    def __init__(self, settings: QSettings, parent: QWidget | None = None,
                 initial: ConnectionParams | None = None) -> None:
        super().__init__(parent)
        self.setObjectName('connect-dialog')
        self.setWindowTitle('Connect to a NICOS daemon')
        self.settings = settings
        self.profiles = load_profiles(settings)
        self.profile = QComboBox(self)
        self.profile.setObjectName('connect-profile')
        self.profile.setEditable(True)
        self.profile.setInsertPolicy(QComboBox.NoInsert)
        self.profile.lineEdit().setPlaceholderText('profile name (to save)')
        self.profile.addItems(sorted(self.profiles))
        self.profile.activated.connect(lambda _i: self.use_profile(self.profile.currentText()))
        self.host = QLineEdit(self)
        self.host.setObjectName('connect-host')
        self.port = QSpinBox(self)
        self.port.setObjectName('connect-port')
        self.port.setRange(1, 65535)
        self.port.setValue(DEFAULT_PORT)
        self.user = QLineEdit(self)
        self.user.setObjectName('connect-user')
        self.password = QLineEdit(self)
        self.password.setObjectName('connect-password')
        self.password.setEchoMode(QLineEdit.Password)
        self.viewonly = QCheckBox('view only (watch, do not steer)', self)
        self.viewonly.setObjectName('connect-viewonly')
        self.tls = QCheckBox('Use TLS', self)
        self.tls.setObjectName('connect-tls')
        self.tls.setToolTip('Encrypt both connections and check the daemon\'s certificate. '
                            'Only for daemons of this project with TLS configured.')
        self.tls_ca = QLineEdit(self)
        self.tls_ca.setObjectName('connect-tls-ca')
        self.tls_ca.setPlaceholderText("system's trusted CAs")
        self.tls_ca.setToolTip('PEM file of the CA that signed the daemon\'s certificate, '
                               'e.g. the daemon\'s self-signed certificate itself')
        self.tls_ca_button = QPushButton('Browse...', self)
        self.tls_ca_button.clicked.connect(self.choose_tls_ca)
        self.tls.toggled.connect(self._update_tls_fields)
        self.save_button = QPushButton('Save profile', self)
        self.save_button.clicked.connect(self.save_current_profile)
        self.delete_button = QPushButton('Delete profile', self)
        self.delete_button.clicked.connect(self.delete_current_profile)
        self.message = QLabel('', self)
        self.message.setStyleSheet('color: #c00000')
        self.message.setWordWrap(True)

        profile_row = QHBoxLayout()
        profile_row.addWidget(self.profile, 1)
        profile_row.addWidget(self.save_button)
        profile_row.addWidget(self.delete_button)
        form = QFormLayout()
        form.addRow('Profile:', profile_row)
        form.addRow('Host:', self.host)
        form.addRow('Port:', self.port)
        form.addRow('User:', self.user)
        form.addRow('Password:', self.password)
        form.addRow('', self.viewonly)
        form.addRow('', self.tls)
        tls_ca_row = QHBoxLayout()
        tls_ca_row.addWidget(self.tls_ca, 1)
        tls_ca_row.addWidget(self.tls_ca_button)
        form.addRow('CA file:', tls_ca_row)
        buttons = QDialogButtonBox(self)
        self.connect_button = buttons.addButton('Connect', QDialogButtonBox.AcceptRole)
        self.connect_button.setDefault(True)
        buttons.addButton(QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.submit)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.message)
        layout.addWidget(buttons)
        layout.addWidget(QLabel('<small>Passwords are never stored.</small>', self))

        last = str(settings.value('lastprofile', '') or '')
        if initial is not None:
            self.set_params(initial)
        elif last in self.profiles:
            self.use_profile(last)
        else:
            self.set_params(ConnectionParams(host='localhost', user=getpass.getuser()))
        self._update_tls_fields()
        self.setWindowModality(Qt.NonModal)

    def set_params(self, params: ConnectionParams) -> None:
        self.host.setText(params.host)
        self.port.setValue(params.port)
        self.user.setText(params.user)
        self.viewonly.setChecked(params.viewonly)
        self.tls.setChecked(params.tls)
        self.tls_ca.setText(params.tls_ca)
        (self.password if params.user else self.user).setFocus()

    def params(self) -> ConnectionParams:
        return ConnectionParams(host=self.host.text().strip(), port=self.port.value(),
                                user=self.user.text().strip(),
                                viewonly=self.viewonly.isChecked(), tls=self.tls.isChecked(),
                                tls_ca=self.tls_ca.text().strip())

    def _update_tls_fields(self) -> None:
        # The CA file is kept while TLS is off, so that toggling loses nothing.
        self.tls_ca.setEnabled(self.tls.isChecked())
        self.tls_ca_button.setEnabled(self.tls.isChecked())

    def choose_tls_ca(self) -> None:
        path, _filter = QFileDialog.getOpenFileName(
            self, 'CA certificate of the daemon', self.tls_ca.text(),
            'PEM certificates (*.pem *.crt *.cer);;All files (*)')
        if path:
            self.tls_ca.setText(path)

    def use_profile(self, name: str) -> None:
        params = self.profiles.get(name)
        if params is not None:
            self.profile.setEditText(name)
            self.set_params(params)

    def save_current_profile(self) -> None:
        name = self.profile.currentText().strip()
        if not name or '/' in name or '\\' in name:
            self.message.setText('Give the profile a name (without slashes).')
            return
        params = self.params()
        save_profile(self.settings, name, params)
        if name not in self.profiles:
            self.profile.addItem(name)
        self.profiles[name] = params
        self.message.setText('')

    def delete_current_profile(self) -> None:
        name = self.profile.currentText().strip()
        if name in self.profiles:
            delete_profile(self.settings, name)
            del self.profiles[name]
            self.profile.removeItem(self.profile.findText(name))

    def submit(self) -> None:
        params = self.params()
        if not params.host or not params.user:
            self.message.setText('Host and user are needed.')
            return
        if params.tls and params.tls_ca and not os.path.isfile(params.tls_ca):
            self.message.setText(f'CA file {params.tls_ca} does not exist.')
            return
        name = self.profile.currentText().strip()
        if name in self.profiles:
            self.settings.setValue('lastprofile', name)
            if self.profiles[name] != params:
                save_profile(self.settings, name, params)
                self.profiles[name] = params
        password = self.password.text()
        self.password.clear()
        self.accept()
        self.connectRequested.emit(params, password)


__all__ = ['ConnectDialog', 'delete_profile', 'load_profiles', 'parse_address',
           'save_profile']
