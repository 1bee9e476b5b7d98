"""The main window: dock panels, the control toolbar, menus, the status bar,
and the saved layout."""

from __future__ import annotations

from typing import Any

from PyQt5.QtCore import QByteArray, QSettings, Qt
from PyQt5.QtGui import QCloseEvent, QKeySequence, QShowEvent
from PyQt5.QtWidgets import (
    QAction,
    QDockWidget,
    QMainWindow,
    QSizePolicy,
    QToolBar,
    QToolButton,
    QWidget,
)

from nicos.protocols.daemon import (
    BREAK_AFTER_LINE,
    BREAK_AFTER_STEP,
    BREAK_NOW,
    STATUS_INBREAK,
    STATUS_RUNNING,
    STATUS_STOPPING,
)

from .client import ConnectionParams, ConnState, QtClient
from .connect import ConnectDialog
from .dialogs import confirm, inform, show_nonmodal
from .panels.base import Panel
from .panels.console import ConsolePanel
from .panels.devices import DevicesPanel
from .panels.editor import EditorPanel
from .panels.plots import PlotsPanel
from .panels.queue import QueuePanel
from .panels.status import StatusDisplay
from .panels.watch import WatchPanel

LAYOUT_VERSION = 1

# action name -> (text, shortcut, tooltip); documented in docs/gui.md
SHORTCUTS = {
    'connect': ('&Connect...', 'Ctrl+Shift+C', 'Connect to a daemon'),
    'disconnect': ('&Disconnect', 'Ctrl+Shift+D', 'Log out from the daemon'),
    'break': ('&Break', 'F8', 'Pause the script after the current step'),
    'continue': ('C&ontinue', 'F9', 'Continue the paused script'),
    'stop': ('&Stop', 'F11', 'Stop the script after the current step, drop the queue'),
    'emergency': ('EMERGENCY STOP', 'F12',
                  'Stop the script at once, drop the queue and stop all devices'),
    'console': ('Command &line', 'Ctrl+L', 'Go to the console command line'),
    'quit': ('&Quit', 'Ctrl+Q', 'Close the window (scripts go on in the daemon)'),
}

EMERGENCY_STYLE = """
QToolButton#emergency-button {
    background: #d00000; color: white; font-weight: bold; font-size: 14pt;
    border: 2px solid #800000; border-radius: 6px; padding: 6px 14px;
}
QToolButton#emergency-button:hover { background: #f00000; }
QToolButton#emergency-button:pressed { background: #900000; }
QToolButton#emergency-button:disabled { background: #e0b0b0; color: #f8f0f0;
                                        border-color: #c0a0a0; }
"""


class MainWindow(QMainWindow):
    """The application window.  *settings* keeps layout, profiles and history."""

    def __init__(self, settings: QSettings, client: QtClient | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName('nicos-gui-main')
        self.settings = settings
        self.client = client or QtClient(self)
        self._closing_confirmed = False
        self._connect_dialog: ConnectDialog | None = None
        self._shown_once = False
        self._layout_restored = False
        self.setDockNestingEnabled(True)
        self.setDockOptions(QMainWindow.AnimatedDocks | QMainWindow.AllowNestedDocks
                            | QMainWindow.AllowTabbedDocks)
        # Docks only; a tiny placeholder central widget would steal space.
        self.setCentralWidget(None)

        self.editor = EditorPanel(self.client, self)
        self.console = ConsolePanel(self.client, self)
        self.queue = QueuePanel(self.client, self)
        self.watch = WatchPanel(self.client, self)
        self.devices = DevicesPanel(self.client, self)
        self.plots = PlotsPanel(self.client, self)
        self.panels: list[Panel] = [self.editor, self.console, self.queue, self.watch,
                                    self.devices, self.plots]
        self.docks: dict[str, QDockWidget] = {}
        for panel in self.panels:
            dock = QDockWidget(panel.title, self)
            dock.setObjectName(f'dock-{panel.name}')
            dock.setWidget(panel)
            dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable
                             | QDockWidget.DockWidgetClosable)
            self.docks[panel.name] = dock
        self.default_layout()

        self._make_actions()
        self._make_toolbar()
        self._make_menus()
        self.status_display = StatusDisplay(self.client, self.statusBar())
        self.editor.fileChanged.connect(lambda name: self.docks['editor'].setWindowTitle(
            f'Script editor - {name}'))

        self.client.stateChanged.connect(self.update_actions)
        self.client.statusChanged.connect(self.update_actions)
        self.client.connected.connect(self.update_actions)
        self.client.disconnected.connect(self.update_actions)
        self.update_actions()
        self.resize(1400, 900)
        self.restore_settings()

    # --------------------------------------------------------------- layout

    def default_layout(self) -> None:
        docks = self.docks
        for dock in docks.values():
            dock.setFloating(False)
            dock.show()
        self.addDockWidget(Qt.LeftDockWidgetArea, docks['editor'])
        self.addDockWidget(Qt.RightDockWidgetArea, docks['plots'])
        self.splitDockWidget(docks['editor'], docks['console'], Qt.Vertical)
        self.splitDockWidget(docks['plots'], docks['devices'], Qt.Vertical)
        self.tabifyDockWidget(docks['devices'], docks['watch'])
        self.tabifyDockWidget(docks['watch'], docks['queue'])
        docks['devices'].raise_()
        self._size_docks()

    def _size_docks(self) -> None:
        docks = self.docks
        width, height = max(self.width(), 800), max(self.height(), 600)
        self.resizeDocks([docks['editor'], docks['plots']], [width // 2, width // 2],
                         Qt.Horizontal)
        self.resizeDocks([docks['editor'], docks['console']], [height * 11 // 20,
                                                              height * 9 // 20], Qt.Vertical)
        self.resizeDocks([docks['plots'], docks['devices']], [height // 2, height // 2],
                         Qt.Vertical)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._shown_once:
            self._shown_once = True
            if not self._layout_restored:
                self._size_docks()

    def _make_action(self, key: str, slot: Any, context: Qt.ShortcutContext
                     = Qt.ApplicationShortcut) -> QAction:
        text, shortcut, tip = SHORTCUTS[key]
        action = QAction(text, self)
        action.setObjectName(f'action-{key}')
        action.setShortcut(QKeySequence(shortcut))
        action.setShortcutContext(context)
        action.setToolTip(f'{tip} ({shortcut})')
        action.setStatusTip(tip)
        action.triggered.connect(slot)
        self.addAction(action)  # shortcuts work even with the toolbar hidden
        return action

    def _make_actions(self) -> None:
        self.connect_action = self._make_action('connect', self.show_connect_dialog)
        self.disconnect_action = self._make_action('disconnect', self.client.disconnect_from)
        self.break_action = self._make_action(
            'break', lambda: self.client.break_script(BREAK_AFTER_STEP))
        self.continue_action = self._make_action('continue', self.client.continue_script)
        self.stop_action = self._make_action(
            'stop', lambda: self.client.stop_script(BREAK_AFTER_STEP))
        self.emergency_action = self._make_action('emergency', self.client.emergency)
        self.console_action = self._make_action('console', self._focus_command_line,
                                                Qt.WindowShortcut)
        self.quit_action = self._make_action('quit', self.close, Qt.WindowShortcut)
        self.stop_line_action = QAction('Stop after the current command', self)
        self.stop_line_action.triggered.connect(
            lambda: self.client.stop_script(BREAK_AFTER_LINE))
        self.stop_now_action = QAction('Stop now (also interrupts counting)', self)
        self.stop_now_action.triggered.connect(lambda: self.client.stop_script(BREAK_NOW))
        self.finish_action = QAction('Finish the current count early', self)
        self.finish_action.triggered.connect(lambda: self.client.ask('finish'))
        self.reset_layout_action = QAction('Reset layout', self)
        self.reset_layout_action.triggered.connect(self.default_layout)

    def _make_toolbar(self) -> None:
        bar = QToolBar('Control', self)
        bar.setObjectName('toolbar-control')
        bar.setToolButtonStyle(Qt.ToolButtonTextOnly)
        bar.addAction(self.connect_action)
        bar.addAction(self.disconnect_action)
        bar.addSeparator()
        bar.addAction(self.editor.run_action)
        bar.addSeparator()
        bar.addAction(self.break_action)
        bar.addAction(self.continue_action)
        bar.addAction(self.stop_action)
        spacer = QWidget(bar)
        spacer.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        bar.addWidget(spacer)
        self.emergency_button = QToolButton(bar)
        self.emergency_button.setObjectName('emergency-button')
        self.emergency_button.setDefaultAction(self.emergency_action)
        self.emergency_button.setToolButtonStyle(Qt.ToolButtonTextOnly)
        self.emergency_button.setMinimumSize(200, 44)
        self.emergency_button.setStyleSheet(EMERGENCY_STYLE)
        bar.addWidget(self.emergency_button)
        self.addToolBar(Qt.TopToolBarArea, bar)
        self.toolbar = bar

    def _make_menus(self) -> None:
        menubar = self.menuBar()
        file_menu = menubar.addMenu('&File')
        file_menu.addAction(self.connect_action)
        file_menu.addAction(self.disconnect_action)
        file_menu.addSeparator()
        for action in self.editor.actions_for_menu()[:4]:
            file_menu.addAction(action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        script_menu = menubar.addMenu('&Script')
        for action in self.editor.actions_for_menu()[5:]:
            script_menu.addAction(action)
        script_menu.addSeparator()
        for action in (self.break_action, self.continue_action, self.stop_action,
                       self.stop_line_action, self.stop_now_action, self.finish_action):
            script_menu.addAction(action)
        script_menu.addSeparator()
        script_menu.addAction(self.emergency_action)
        view_menu = menubar.addMenu('&View')
        for dock in self.docks.values():
            view_menu.addAction(dock.toggleViewAction())
        view_menu.addAction(self.toolbar.toggleViewAction())
        view_menu.addSeparator()
        view_menu.addAction(self.console_action)
        view_menu.addAction(self.reset_layout_action)
        help_menu = menubar.addMenu('&Help')
        help_menu.addAction('Keyboard shortcuts', self.show_shortcuts)
        help_menu.addAction('About', self.show_about)

    def _focus_command_line(self) -> None:
        self.docks['console'].show()
        self.docks['console'].raise_()
        self.console.input.setFocus()

    # ---------------------------------------------------------- enablement

    def update_actions(self, *_args: Any) -> None:
        client = self.client
        status = client.state.status
        control = client.can_control
        self.connect_action.setEnabled(True)
        self.disconnect_action.setEnabled(client.conn_state is not ConnState.DISCONNECTED)
        self.break_action.setEnabled(control and status == STATUS_RUNNING)
        self.continue_action.setEnabled(control and status == STATUS_INBREAK)
        running = status in (STATUS_RUNNING, STATUS_INBREAK, STATUS_STOPPING)
        for action in (self.stop_action, self.stop_line_action, self.stop_now_action,
                       self.finish_action):
            action.setEnabled(control and running)
        # Whenever connected, whatever else is going on, and for view-only
        # connections and guests too; also while reconnecting.
        self.emergency_action.setEnabled(client.can_emergency)
        state = client.conn_state.value
        title = 'NICOS'
        if client.params.user:
            title += f' - {client.params.address} ({state})'
        self.setWindowTitle(title)

    # -------------------------------------------------------------- dialogs

    def show_connect_dialog(self, initial: ConnectionParams | None = None) -> ConnectDialog:
        if self._connect_dialog is not None:
            self._connect_dialog.close()
        dialog = ConnectDialog(self.settings, self, initial)
        dialog.setAttribute(Qt.WA_DeleteOnClose)
        dialog.connectRequested.connect(self.client.connect_to)
        dialog.destroyed.connect(lambda: setattr(self, '_connect_dialog', None))
        self._connect_dialog = dialog
        show_nonmodal(dialog)
        return dialog

    def show_shortcuts(self) -> None:
        rows = ''.join(f'<tr><td><b>{shortcut}</b></td><td>{tip}</td></tr>'
                       for _text, shortcut, tip in SHORTCUTS.values())
        editor = ''.join(
            f'<tr><td><b>{a.shortcut().toString()}</b></td><td>{a.toolTip()}</td></tr>'
            for a in self.editor.actions_for_menu() if a is not None)
        self._info('Keyboard shortcuts', f'<table>{rows}{editor}</table>')

    def show_about(self) -> None:
        banner = self.client.banner
        text = ('<b>nicos-gui</b>: client of the NICOS daemon (protocol 24, JSON).')
        if banner:
            text += (f"<br>Daemon version {banner.get('daemon_version', '?')}, "
                     f"protocol {banner.get('protocol_version', '?')}")
        self._info('About nicos-gui', text)

    def _info(self, title: str, html: str) -> None:
        box = inform(self, title, '')
        box.setText(html)
        box.setTextFormat(Qt.RichText)

    # ------------------------------------------------------------- settings

    def restore_settings(self) -> None:
        settings = self.settings
        geometry = settings.value('window/geometry')
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        state = settings.value('window/state')
        if isinstance(state, QByteArray):
            self._layout_restored = self.restoreState(state, LAYOUT_VERSION)
        for panel in self.panels:
            settings.beginGroup(f'panel-{panel.name}')
            panel.restore_settings(settings)
            settings.endGroup()

    def save_settings(self) -> None:
        settings = self.settings
        settings.setValue('window/geometry', self.saveGeometry())
        settings.setValue('window/state', self.saveState(LAYOUT_VERSION))
        for panel in self.panels:
            settings.beginGroup(f'panel-{panel.name}')
            panel.save_settings(settings)
            settings.endGroup()
        settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.editor.modified and not self._closing_confirmed:
            event.ignore()

            def really() -> None:
                self._closing_confirmed = True
                self.close()

            confirm(self, 'Unsaved changes',
                    f'{self.editor.display_name} has unsaved changes. Quit anyway?', really)
            return
        self.save_settings()
        self.client.shutdown()
        event.accept()


__all__ = ['MainWindow', 'SHORTCUTS']
