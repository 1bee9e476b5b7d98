"""The status bar: connection, daemon state (colour-coded), current request,
current line, user and level."""

from __future__ import annotations

from typing import Any

from PyQt5.QtCore import QObject
from PyQt5.QtWidgets import QLabel, QStatusBar

from ..client import ConnState, QtClient
from ..values import daemon_state, request_title

CONNECTION_COLOURS = {
    ConnState.CONNECTED: '#c8f0c8',
    ConnState.CONNECTING: '#fff0a0',
    ConnState.RECONNECTING: '#ffd080',
    ConnState.DISCONNECTED: '#d8d8d8',
}


def _label(bar: QStatusBar, name: str, tip: str, stretch: int = 0) -> QLabel:
    label = QLabel(bar)
    label.setObjectName(name)
    label.setToolTip(tip)
    label.setMargin(2)
    bar.addPermanentWidget(label, stretch)
    return label


def _colour(label: QLabel, background: str, foreground: str = '#000000',
            bold: bool = False) -> None:
    weight = 'font-weight: bold; ' if bold else ''
    label.setStyleSheet(f'QLabel {{ background: {background}; color: {foreground}; '
                        f'{weight}border-radius: 3px; padding: 1px 6px; }}')


class StatusDisplay(QObject):
    """Fills a QStatusBar from the client's state; the labels are public for tests."""

    def __init__(self, client: QtClient, bar: QStatusBar) -> None:
        super().__init__(bar)
        self.client = client
        self.bar = bar
        self.state_label = _label(bar, 'status-state', 'What the daemon does')
        self.request_label = _label(bar, 'status-request', 'The request being executed', 1)
        self.line_label = _label(bar, 'status-line', 'Line of the script being executed')
        self.user_label = _label(bar, 'status-user', 'Logged-in user and level')
        self.connection_label = _label(bar, 'status-connection', 'Connection to the daemon')
        client.stateChanged.connect(self._connection_changed)
        client.connected.connect(self.refresh)
        client.disconnected.connect(self.refresh)
        client.statusChanged.connect(lambda *_a: self.refresh())
        client.requestStarted.connect(lambda *_a: self.refresh())
        client.requestDone.connect(lambda *_a: self.refresh())
        client.actionChanged.connect(lambda *_a: self.refresh())
        client.queueChanged.connect(self.refresh)
        client.commandFailed.connect(self._command_failed)
        client.emergencySent.connect(self._emergency_sent)
        self._connection_changed(client.conn_state, 'not connected')

    def _connection_changed(self, state: ConnState, text: str) -> None:
        words = {ConnState.CONNECTED: 'connected', ConnState.CONNECTING: 'connecting',
                 ConnState.RECONNECTING: 'reconnecting', ConnState.DISCONNECTED: 'offline'}
        self.connection_label.setText(words[state])
        self.connection_label.setToolTip(text)
        _colour(self.connection_label, CONNECTION_COLOURS[state])
        if state is not ConnState.CONNECTED:
            self.bar.showMessage(text, 10000)
        self.refresh()

    def _command_failed(self, command: str, reason: str) -> None:
        self.bar.showMessage(f'{command or "daemon"}: {reason}', 10000)

    def _emergency_sent(self, via: str) -> None:
        self.bar.showMessage(f'emergency stop sent (on the {via})', 10000)

    def refresh(self, *_args: Any) -> None:
        client = self.client
        state = client.state
        if not client.is_connected:
            self.state_label.setText('no daemon')
            _colour(self.state_label, '#d8d8d8', '#404040')
            self.request_label.setText('')
            self.line_label.setText('')
            self.user_label.setText('')
            return
        word, background, foreground = daemon_state(state.status)
        self.state_label.setText(word)
        _colour(self.state_label, background, foreground, bold=True)
        request = request_title(state.current) if not state.idle else ''
        if state.action and not state.idle:
            request = f'{request} - {state.action}' if request else state.action
        queued = len(state.requests)
        if queued:
            request += f'  (+{queued} queued)'
        self.request_label.setText(request)
        self.line_label.setText(f'line {state.lineno}' if not state.idle and state.lineno > 0
                                else '')
        mode = f', {state.mode}' if state.mode and state.mode != 'master' else ''
        view = ', view-only' if client.viewonly else ''
        self.user_label.setText(f'{client.params.user} ({client.level_name}{view}{mode})')


__all__ = ['StatusDisplay']
