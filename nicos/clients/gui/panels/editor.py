"""The script editor: files, Run / Simulate / Update, live line and error marks."""

from __future__ import annotations

import os
from typing import Any

from PyQt5.QtCore import QSettings, Qt, pyqtSignal
from PyQt5.QtGui import QKeySequence
from PyQt5.QtWidgets import QAction, QLabel, QToolBar, QVBoxLayout, QWidget

from ..client import QtClient
from ..codeedit import CodeEdit
from ..dialogs import choose_file, confirm, inform
from ..values import error_line
from .base import Panel

RUNNING_MARK = {0: False, 1: True, 2: False}  # status -> paused?


def normalize(code: str) -> str:
    """The daemon appends a newline to multi-line text; compare like it."""
    if '\n' in code and not code.endswith('\n'):
        return code + '\n'
    return code


class EditorPanel(Panel):
    """Edit a script, run it and follow its execution.

    The panel follows "its" request: the one it submitted last, or the
    running request whose text equals the editor's text (e.g. after a
    reconnect).  Its executing line is marked live; when it fails, the line of
    the error is marked red and the message shown below the text.
    """

    name = 'editor'
    title = 'Script editor'

    fileChanged = pyqtSignal(str)

    def __init__(self, client: QtClient, parent: QWidget | None = None) -> None:
        super().__init__(client, parent)
        self.path = ''
        self.directory = os.getcwd()
        self.reqid: str | None = None  # request submitted from this editor
        self._following = False
        self._done_shown: str | None = None  # the request whose end is shown
        self.edit = CodeEdit(self)
        self.edit.setObjectName('editor-text')
        self.info = QLabel(self)
        self.info.setObjectName('editor-info')
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.info.hide()
        self._make_actions()
        toolbar = QToolBar(self)
        toolbar.setToolButtonStyle(Qt.ToolButtonTextOnly)
        for action in (self.new_action, self.open_action, self.save_action):
            toolbar.addAction(action)
        toolbar.addSeparator()
        for action in (self.run_action, self.simulate_action, self.update_action):
            toolbar.addAction(action)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(toolbar)
        layout.addWidget(self.edit, 1)
        layout.addWidget(self.info)

        self.edit.document().modificationChanged.connect(self._modification_changed)
        self.edit.textChanged.connect(self._text_changed)
        client.statusChanged.connect(self._on_status)
        client.requestStarted.connect(self._on_started)
        client.requestDone.connect(self._on_done)
        client.connected.connect(self._on_connected)
        client.disconnected.connect(self._update_actions)
        client.stateChanged.connect(self._update_actions)
        self._update_actions()

    def _action(self, text: str, slot: Any, shortcuts: list[str], tip: str) -> QAction:
        action = QAction(text, self)
        action.setShortcuts([QKeySequence(s) for s in shortcuts])
        action.setShortcutContext(Qt.WindowShortcut)
        keys = ', '.join(shortcuts)
        action.setToolTip(f'{tip} ({keys})' if keys else tip)
        action.triggered.connect(slot)
        return action

    def _make_actions(self) -> None:
        self.new_action = self._action('New', self.new_file, ['Ctrl+N'], 'Empty editor')
        self.open_action = self._action('Open...', self.open_file, ['Ctrl+O'],
                                        'Open a script file')
        self.save_action = self._action('Save', self.save_file, ['Ctrl+S'], 'Save the script')
        self.save_as_action = self._action('Save as...', self.save_file_as,
                                           ['Ctrl+Shift+S'], 'Save under a new name')
        self.run_action = self._action('Run', self.run, ['F5', 'Ctrl+Return'],
                                       'Run the script now, or queue it if a script is running')
        self.simulate_action = self._action('Simulate', self.simulate, ['F6'],
                                            'Dry run of the script in the daemon')
        self.update_action = self._action('Update', self.update_script, ['F7'],
                                          'Replace the running (or queued) script by the '
                                          "editor's text; the executed part must not change")

    def actions_for_menu(self) -> list[QAction | None]:
        """The panel's actions for the main window's menus (None = separator)."""
        return [self.new_action, self.open_action, self.save_action, self.save_as_action,
                None, self.run_action, self.simulate_action, self.update_action]

    # ------------------------------------------------------------------ files

    @property
    def modified(self) -> bool:
        return self.edit.document().isModified()

    @property
    def display_name(self) -> str:
        return os.path.basename(self.path) if self.path else 'untitled'

    def set_text(self, text: str, path: str = '') -> None:
        self.edit.setPlainText(text)
        self.edit.document().setModified(False)
        self.path = path
        self.reqid = None
        self.edit.clear_marks()
        self._show_info('')
        self.fileChanged.emit(self.display_name)

    def _unless_unsaved(self, then: Any) -> None:
        if not self.modified:
            then()
            return
        confirm(self, 'Unsaved changes',
                f'{self.display_name} has unsaved changes. Discard them?', then)

    def new_file(self) -> None:
        self._unless_unsaved(lambda: self.set_text(''))

    def open_file(self) -> None:
        self._unless_unsaved(lambda: choose_file(self, 'Open script', self.directory,
                                                 self.load_file))

    def load_file(self, path: str) -> bool:
        try:
            with open(path, encoding='utf-8') as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as err:
            inform(self, 'Cannot open file', f'{path}: {err}', error=True)
            return False
        self.directory = os.path.dirname(os.path.abspath(path))
        self.set_text(text, path)
        return True

    def save_file(self) -> None:
        if self.path:
            self.write_file(self.path)
        else:
            self.save_file_as()

    def save_file_as(self) -> None:
        choose_file(self, 'Save script', self.path or self.directory, self.write_file,
                    save=True)

    def write_file(self, path: str) -> bool:
        try:
            with open(path, 'w', encoding='utf-8') as file:
                file.write(self.edit.toPlainText())
        except OSError as err:
            inform(self, 'Cannot save file', f'{path}: {err}', error=True)
            return False
        self.path = path
        self.directory = os.path.dirname(os.path.abspath(path))
        self.edit.document().setModified(False)
        self.fileChanged.emit(self.display_name)
        return True

    def _modification_changed(self, modified: bool) -> None:
        self.fileChanged.emit(self.display_name + ('*' if modified else ''))

    def _text_changed(self) -> None:
        if self.edit.error_line is not None:
            self.edit.set_error(None)
            self._show_info('')

    # ------------------------------------------------------------- commands

    def script_text(self) -> str:
        return self.edit.toPlainText()

    def run(self) -> None:
        code = self.script_text()
        if not code.strip():
            self._show_info('Nothing to run: the editor is empty.')
            return
        self.edit.clear_marks()
        self._show_info('Submitting ...')
        self.client.run_script(code, self.display_name if self.path else '',
                               result=self._submitted,
                               error=lambda err: self._show_info(f'Not started: {err}',
                                                                 error=True))

    def _submitted(self, reqid: Any) -> None:
        self.reqid = str(reqid)
        # The events of the request travel on another connection than the
        # reply, so the request may have started or even ended already.
        done = self.client.state.finished.get(self.reqid)
        if done is not None:
            if self._done_shown != self.reqid:
                self._on_done(done)
            return
        current = self.client.state.current
        if current is not None and current.get('reqid') == self.reqid:
            self._follow(True)
            self._show_info('Running.')
        else:
            queued = any(r.get('reqid') == self.reqid for r in self.client.state.requests)
            self._show_info('Queued: it starts when the scripts before it have finished.'
                            if queued else 'Submitted.')

    def simulate(self) -> None:
        code = self.script_text()
        if not code.strip():
            self._show_info('Nothing to simulate: the editor is empty.')
            return
        self._show_info('Simulation requested; its output appears in the console.')
        self.client.simulate(code, self.display_name,
                             error=lambda err: self._show_info(f'Simulation refused: {err}',
                                                               error=True))

    def update_script(self) -> None:
        code = self.script_text()
        state = self.client.state
        queued = self.reqid is not None and any(r.get('reqid') == self.reqid
                                                for r in state.requests)
        if queued:
            target: str | None = self.reqid
        elif not state.idle:
            target = None  # the running script
        else:
            self._show_info('Nothing to update: no script is running.', error=True)
            return
        self.client.update_script(
            code, target, 'edited in the GUI',
            result=lambda _r: self._show_info('Script updated.'),
            error=lambda err: self._show_info(f'Update refused: {err}', error=True))

    # --------------------------------------------------------------- events

    def _tracks(self, request: dict[str, Any] | None) -> bool:
        if request is None:
            return False
        reqid = request.get('reqid')
        if reqid is not None and reqid == self.reqid:
            return True
        script = request.get('script')
        return bool(script) and script == normalize(self.script_text())

    def _follow(self, on: bool) -> None:
        self._following = on
        if not on:
            self.edit.set_current_line(None)

    def _on_connected(self) -> None:
        state = self.client.state
        self._follow(self._tracks(state.current) and not state.idle)
        if self._following:
            self._on_status(state.status, state.lineno)
        self._update_actions()

    def _on_started(self, request: dict[str, Any]) -> None:
        if self._following and request.get('reqid') == self.reqid:
            return  # sent again after an update of the running script
        if self._tracks(request):
            if request.get('reqid'):
                self.reqid = request['reqid']
            self.edit.set_error(None)
            self._follow(True)
            self._show_info('Running.')
        else:
            self._follow(False)

    def _on_status(self, status: int, line: int) -> None:
        if not self._following:
            return
        if status in RUNNING_MARK and line > 0:
            self.edit.set_current_line(line, paused=RUNNING_MARK[status])
        elif status < 0:
            self.edit.set_current_line(None)

    def _on_done(self, request: dict[str, Any]) -> None:
        if not (request.get('reqid') == self.reqid or self._following and self._tracks(request)):
            return
        self._done_shown = request.get('reqid')
        self._follow(False)
        if request.get('success'):
            self._show_info('Finished.')
            return
        record = self.client.state.errors.get(str(request.get('reqid')))
        if record is None:
            self._show_info('Stopped or failed.', error=True)
            return
        text = str(record[3]).strip()
        line = error_line(text, record[4])
        self.edit.set_error(line, text)
        where = f'Line {line}: ' if line else ''
        self._show_info(f'{where}{text}', error=True)

    def _show_info(self, text: str, error: bool = False) -> None:
        self.info.setText(text)
        self.info.setStyleSheet('color: #c00000; font-weight: bold' if error else '')
        self.info.setVisible(bool(text))

    def _update_actions(self, *_args: Any) -> None:
        control = self.client.can_control
        for action in (self.run_action, self.update_action):
            action.setEnabled(control)
        self.simulate_action.setEnabled(self.client.is_connected)

    # ------------------------------------------------------------- settings

    def save_settings(self, settings: QSettings) -> None:
        settings.setValue('directory', self.directory)
        settings.setValue('path', self.path)

    def restore_settings(self, settings: QSettings) -> None:
        self.directory = str(settings.value('directory', self.directory) or self.directory)
        path = str(settings.value('path', '') or '')
        if path and os.path.isfile(path):
            self.load_file(path)


__all__ = ['EditorPanel', 'normalize']
