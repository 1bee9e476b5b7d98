"""The running script with its current line, and the queue of pending requests
(drag to rearrange, remove, view)."""

from __future__ import annotations

from typing import Any

from PyQt5.QtCore import QModelIndex, Qt
from PyQt5.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from ..client import QtClient
from ..codeedit import CodeEdit
from ..dialogs import show_nonmodal
from ..values import daemon_state, request_title
from .base import Panel

REQID_ROLE = Qt.UserRole


class ScriptViewer(QDialog):
    """Read-only view of a request's text."""

    def __init__(self, request: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WA_DeleteOnClose)
        self.setWindowTitle(f'Queued script: {request_title(request)}')
        view = CodeEdit(self, readonly=True)
        view.setPlainText(str(request.get('script') or ''))
        buttons = QDialogButtonBox(QDialogButtonBox.Close, self)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"by {request.get('user', '?')}, "
                                f"id {request.get('reqid', '?')}", self))
        layout.addWidget(view)
        layout.addWidget(buttons)
        self.resize(600, 400)


class QueuePanel(Panel):
    name = 'queue'
    title = 'Script queue'

    def __init__(self, client: QtClient, parent: QWidget | None = None) -> None:
        super().__init__(client, parent)
        self._rebuilding = False
        # the running script
        self.current_label = QLabel('No script running', self)
        self.current_label.setObjectName('queue-current')
        self.current_view = CodeEdit(self, readonly=True)
        self.current_view.setObjectName('queue-current-script')
        top = QWidget(self)
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.current_label)
        top_layout.addWidget(self.current_view)
        # the queue
        self.list = QListWidget(self)
        self.list.setObjectName('queue-list')
        self.list.setDragDropMode(QAbstractItemView.InternalMove)
        self.list.setDefaultDropAction(Qt.MoveAction)
        self.list.setSelectionMode(QAbstractItemView.SingleSelection)
        self.list.model().rowsMoved.connect(self._rows_moved)
        self.list.itemDoubleClicked.connect(lambda _item: self.view_selected())
        self.list.itemSelectionChanged.connect(self._update_buttons)
        self.view_button = QPushButton('View', self)
        self.up_button = QPushButton('Up', self)
        self.down_button = QPushButton('Down', self)
        self.remove_button = QPushButton('Remove', self)
        self.clear_button = QPushButton('Remove all', self)
        self.view_button.clicked.connect(self.view_selected)
        self.up_button.clicked.connect(lambda: self.move_selected(-1))
        self.down_button.clicked.connect(lambda: self.move_selected(+1))
        self.remove_button.clicked.connect(self.remove_selected)
        self.clear_button.clicked.connect(lambda: self.client.unqueue('*'))
        buttons = QHBoxLayout()
        for button in (self.view_button, self.up_button, self.down_button,
                       self.remove_button, self.clear_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        bottom = QWidget(self)
        bottom_layout = QVBoxLayout(bottom)
        bottom_layout.setContentsMargins(0, 0, 0, 0)
        self.queue_label = QLabel('Queue (drag to reorder)', self)
        bottom_layout.addWidget(self.queue_label)
        bottom_layout.addWidget(self.list)
        bottom_layout.addLayout(buttons)
        splitter = QSplitter(Qt.Vertical, self)
        splitter.addWidget(top)
        splitter.addWidget(bottom)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(splitter)

        client.queueChanged.connect(self.rebuild)
        client.connected.connect(self._on_connected)
        client.disconnected.connect(self._update_buttons)
        client.requestStarted.connect(self._show_current)
        client.statusChanged.connect(self._on_status)
        self._update_buttons()

    # ---------------------------------------------------------------- queue

    def queued_ids(self) -> list[str]:
        return [self.list.item(row).data(REQID_ROLE) for row in range(self.list.count())]

    def rebuild(self) -> None:
        selected = self._selected_id()
        self._rebuilding = True
        try:
            self.list.clear()
            for request in self.client.state.requests:
                item = QListWidgetItem(f"{request_title(request)}  ({request.get('user', '?')})")
                item.setData(REQID_ROLE, request.get('reqid'))
                item.setToolTip(str(request.get('script') or ''))
                item.setFlags(item.flags() & ~Qt.ItemIsDropEnabled)
                self.list.addItem(item)
                if request.get('reqid') == selected:
                    item.setSelected(True)
                    self.list.setCurrentItem(item)
        finally:
            self._rebuilding = False
        count = self.list.count()
        self.queue_label.setText(f'Queue: {count} pending (drag to reorder)' if count
                                 else 'Queue: empty')
        self._update_buttons()

    def _selected_id(self) -> str | None:
        items = self.list.selectedItems()
        return items[0].data(REQID_ROLE) if items else None

    def _rows_moved(self, _parent: QModelIndex, _start: int, _end: int,
                    _dest: QModelIndex, _row: int) -> None:
        if not self._rebuilding:
            self.send_order(self.queued_ids())

    def send_order(self, ids: list[str]) -> None:
        """Ask the daemon for this order; the list follows its answer."""
        if ids == [r.get('reqid') for r in self.client.state.requests]:
            return
        self.client.ask('rearrange', ids, error=lambda _err: self.rebuild())

    def move_selected(self, offset: int) -> None:
        ids = self.queued_ids()
        selected = self._selected_id()
        if selected is None:
            return
        row = ids.index(selected)
        new = row + offset
        if not 0 <= new < len(ids):
            return
        ids.insert(new, ids.pop(row))
        self.send_order(ids)

    def remove_selected(self) -> None:
        reqid = self._selected_id()
        if reqid is not None:
            self.client.unqueue(reqid)

    def view_selected(self) -> None:
        reqid = self._selected_id()
        for request in self.client.state.requests:
            if request.get('reqid') == reqid:
                show_nonmodal(ScriptViewer(request, self))
                return

    def _update_buttons(self, *_args: Any) -> None:
        control = self.client.can_control
        selected = self._selected_id() is not None
        self.view_button.setEnabled(selected)
        for button in (self.up_button, self.down_button, self.remove_button):
            button.setEnabled(control and selected)
        self.clear_button.setEnabled(control and self.list.count() > 0)
        self.list.setDragEnabled(control)

    # ------------------------------------------------------- current script

    def _on_connected(self) -> None:
        state = self.client.state
        self.current_view.setPlainText(state.script)
        self._on_status(state.status, state.lineno)
        self.rebuild()

    def _show_current(self, request: dict[str, Any]) -> None:
        text = str(request.get('script') or '')
        if text != self.current_view.toPlainText():
            self.current_view.setPlainText(text)

    def _on_status(self, status: int, line: int) -> None:
        state = self.client.state
        word = daemon_state(status)[0]
        title = request_title(state.current) or state.scriptname or 'last script'
        if status >= 0:
            where = f', line {line}' if line > 0 else ''
            self.current_label.setText(f'{word}: {title}{where}')
            self.current_view.set_current_line(line if line > 0 else None, paused=status == 1)
        else:
            self.current_label.setText(f'idle (last: {title})' if state.script else 'idle')
            self.current_view.set_current_line(None)


__all__ = ['QueuePanel', 'ScriptViewer']
