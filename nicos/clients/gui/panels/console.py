"""The message stream of the daemon, filtered by level, and a command line.

The command line runs what is typed as a script (at once when the daemon is
idle, else queued); ``?expr`` evaluates an expression and shows its value.
Up/Down walk through the history, which is kept in the settings.
"""

from __future__ import annotations

import time
from typing import Any

from PyQt5.QtCore import QSettings, Qt, pyqtSignal
from PyQt5.QtGui import QColor, QFontDatabase, QKeyEvent, QTextCharFormat, QTextCursor
from PyQt5.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from nicos.protocols.daemon import DEBUG, ERROR, INFO, INPUT, WARNING

from ..client import ConnState, QtClient
from ..values import message_colour
from .base import Panel

MAX_HISTORY = 500
MAX_BLOCKS = 20000
FILTERS = (('all', DEBUG), ('info', INFO), ('warnings', WARNING), ('errors', ERROR))
LOCAL_COLOUR = '#006060'  # what the GUI itself writes (eval results, refusals)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f'{seconds:.0f} s'
    if seconds < 5400:
        return f'{seconds / 60:.0f} min'
    return f'{seconds / 3600:.1f} h'


class HistoryLineEdit(QLineEdit):
    """A line edit with a command history on Up/Down."""

    submitted = pyqtSignal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.history: list[str] = []
        self._index = 0
        self._draft = ''
        self.returnPressed.connect(self._submit)

    def set_history(self, history: list[str]) -> None:
        self.history = history[-MAX_HISTORY:]
        self._index = len(self.history)

    def _submit(self) -> None:
        text = self.text()
        if not text.strip():
            return
        if not self.history or self.history[-1] != text:
            self.history.append(text)
            del self.history[:-MAX_HISTORY]
        self._index = len(self.history)
        self.clear()
        self.submitted.emit(text)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key_Up:
            self._walk(-1)
        elif event.key() == Qt.Key_Down:
            self._walk(+1)
        else:
            super().keyPressEvent(event)

    def _walk(self, step: int) -> None:
        if not self.history:
            return
        if self._index == len(self.history):
            self._draft = self.text()
        self._index = max(0, min(len(self.history), self._index + step))
        self.setText(self.history[self._index] if self._index < len(self.history)
                     else self._draft)


class ConsolePanel(Panel):
    name = 'console'
    title = 'Console'

    def __init__(self, client: QtClient, parent: QWidget | None = None) -> None:
        super().__init__(client, parent)
        self.min_level = INFO
        self.records: list[tuple[list[Any], str]] = []  # (record, prefix)
        self.output = QPlainTextEdit(self)
        self.output.setObjectName('console-output')
        self.output.setReadOnly(True)
        self.output.setMaximumBlockCount(MAX_BLOCKS)
        self.output.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.output.setLineWrapMode(QPlainTextEdit.WidgetWidth)
        self.filter = QComboBox(self)
        self.filter.setObjectName('console-filter')
        for label, level in FILTERS:
            self.filter.addItem(label, level)
        self.filter.setCurrentIndex(1)
        self.filter.currentIndexChanged.connect(self._filter_changed)
        clear = QPushButton('Clear', self)
        clear.clicked.connect(self.clear)
        top = QHBoxLayout()
        top.addWidget(QLabel('Show:', self))
        top.addWidget(self.filter)
        top.addStretch(1)
        top.addWidget(clear)
        self.input = HistoryLineEdit(self)
        self.input.setObjectName('console-input')
        self.input.setPlaceholderText('Python code to run, or ?expression to evaluate')
        self.input.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.input.submitted.connect(self.execute)
        prompt = QLabel('>>>', self)
        prompt.setFont(self.input.font())
        bottom = QHBoxLayout()
        bottom.addWidget(prompt)
        bottom.addWidget(self.input, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(top)
        layout.addWidget(self.output, 1)
        layout.addLayout(bottom)

        client.message.connect(self.add_message)
        client.simMessage.connect(lambda record: self.add_message(record, '(sim) '))
        client.simResult.connect(self._sim_result)
        client.prompt.connect(self._prompt)
        client.connected.connect(self._on_connected)
        client.commandFailed.connect(self._command_failed)
        client.emergencySent.connect(
            lambda via: self.add_local(f'--- emergency stop sent (on the {via})', '#d00000'))
        client.stateChanged.connect(self._state_changed)

    # ------------------------------------------------------------- messages

    def _on_connected(self) -> None:
        self.records = [(record, '') for record in self.client.state.messages]
        self._render()
        self.add_local(f'--- connected to {self.client.params.address} '
                       f'as {self.client.level_name}', '#808080')

    def add_message(self, record: list[Any], prefix: str = '') -> None:
        self.records.append((record, prefix))
        if len(self.records) > MAX_BLOCKS:
            del self.records[:len(self.records) - MAX_BLOCKS]
        if self._visible(record):
            self._append(record, prefix)

    def add_local(self, text: str, colour: str = LOCAL_COLOUR) -> None:
        """A line from the GUI itself (kept in the record list as INFO)."""
        record = ['gui', time.time(), INFO, text.rstrip('\n') + '\n', None, None]
        self.records.append((record, ''))
        self._write(self._stamp(record) + text.rstrip('\n'), colour)

    def clear(self) -> None:
        self.records.clear()
        self.output.clear()

    def _visible(self, record: list[Any]) -> bool:
        level = record[2] if isinstance(record[2], int) else INFO
        return level >= self.min_level

    def _filter_changed(self, _index: int) -> None:
        self.min_level = int(self.filter.currentData())
        self._render()

    def _render(self) -> None:
        self.output.clear()
        for record, prefix in self.records:
            if self._visible(record):
                self._append(record, prefix)

    @staticmethod
    def _stamp(record: list[Any]) -> str:
        try:
            return time.strftime('[%H:%M:%S] ', time.localtime(float(record[1])))
        except (TypeError, ValueError, OverflowError):
            return ''

    def _append(self, record: list[Any], prefix: str) -> None:
        level = record[2] if isinstance(record[2], int) else INFO
        text = str(record[3]).rstrip('\n')
        if level == INPUT:
            line = text
        else:
            label = 'ERROR: ' if level >= ERROR else 'WARNING: ' if level >= WARNING else ''
            line = self._stamp(record) + label + text
        self._write(prefix + line, message_colour(level), bold=level >= ERROR)
        if level >= ERROR and record[4]:
            self._write(str(record[4]).rstrip('\n'), message_colour(level))

    def _write(self, text: str, colour: str, bold: bool = False) -> None:
        bar = self.output.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        fmt = QTextCharFormat()
        fmt.setForeground(QColor(colour))
        if bold:
            fmt.setFontWeight(75)
        cursor = QTextCursor(self.output.document())
        cursor.movePosition(QTextCursor.End)
        if not self.output.document().isEmpty():
            cursor.insertBlock()
        cursor.insertText(text, fmt)
        if at_end:
            bar.setValue(bar.maximum())

    def text(self) -> str:
        return self.output.toPlainText()

    # -------------------------------------------------------- command line

    def execute(self, text: str) -> None:
        stripped = text.strip()
        if stripped.startswith('?') and len(stripped) > 1:
            expr = stripped[1:].strip()
            self.add_local(f'? {expr}')
            self.client.eval(expr, lambda value: self.add_local(f'  = {value}'),
                             stringify=True,
                             error=lambda err: self.add_local(f'  cannot evaluate: {err}',
                                                              '#d00000'))
            return
        if not self.client.can_control:
            self.add_local(f'not sent ({self._why_not()}): {text}', '#d00000')
            return
        self.client.run_script(text)

    def _why_not(self) -> str:
        if not self.client.is_connected:
            return 'not connected'
        if self.client.viewonly:
            return 'view-only connection'
        return f'user level {self.client.level_name} may not run code'

    def _command_failed(self, command: str, reason: str) -> None:
        self.add_local(f"{command or 'daemon'} refused: {reason}" if command != 'eval'
                       else f'eval failed: {reason}', '#d00000')

    def _sim_result(self, data: Any) -> None:
        if not (isinstance(data, list) and data):
            return
        stop = data[0]
        if not isinstance(stop, int | float) or stop < 0:
            self.add_local('(sim) simulation failed', '#d00000')
            return
        text = '(sim) simulation finished'
        duration = stop - time.time()
        if duration > 0:
            text += f': the script would take about {_duration(duration)}'
        self.add_local(text)
        devices = data[1] if len(data) > 1 and isinstance(data[1], dict) else {}
        for name, info in sorted(devices.items()):
            if isinstance(info, list) and len(info) >= 3:
                self.add_local(f'(sim)   {name}: {info[1]} .. {info[2]}, ends at {info[0]}')

    def _prompt(self, data: Any) -> None:
        if isinstance(data, list) and data:
            self.add_local(f'--- the script waits: {data[0]} (Continue: F9, Stop: F11)',
                           '#b06000')

    def _state_changed(self, state: ConnState, text: str) -> None:
        if state is not ConnState.CONNECTED:
            self.add_local(f'--- {text}', '#808080')

    # ------------------------------------------------------------- settings

    def save_settings(self, settings: QSettings) -> None:
        settings.setValue('history', self.input.history[-MAX_HISTORY:])
        settings.setValue('filter', self.filter.currentIndex())

    def restore_settings(self, settings: QSettings) -> None:
        history = settings.value('history', [])
        if isinstance(history, str):
            history = [history]
        self.input.set_history([str(h) for h in history or []])
        try:
            self.filter.setCurrentIndex(int(settings.value('filter', 1)))
        except (TypeError, ValueError):
            pass


__all__ = ['ConsolePanel', 'HistoryLineEdit']
