"""Watch expressions: evaluated by the daemon, values update live.

The list is the daemon's (shared by all clients); adding and removing sends
``watch``/``unwatch``, and the table shows what the daemon reports.
"""

from __future__ import annotations

from typing import Any

from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..client import QtClient
from ..values import split_watch_key, watch_key
from .base import Panel

KEY_ROLE = Qt.UserRole
PENDING = '(waiting for a value)'


class WatchPanel(Panel):
    name = 'watch'
    title = 'Watch'

    def __init__(self, client: QtClient, parent: QWidget | None = None) -> None:
        super().__init__(client, parent)
        self.tree = QTreeWidget(self)
        self.tree.setObjectName('watch-tree')
        self.tree.setHeaderLabels(['Expression', 'Value'])
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.tree.header().setSectionResizeMode(0, QHeaderView.Interactive)
        self.tree.header().setStretchLastSection(True)
        self.tree.setColumnWidth(0, 180)
        self.items: dict[str, QTreeWidgetItem] = {}
        self.entry = QLineEdit(self)
        self.entry.setObjectName('watch-entry')
        self.entry.setPlaceholderText('expression, e.g. sth.read() or T.target')
        self.entry.returnPressed.connect(self.add_from_entry)
        self.add_button = QPushButton('Add', self)
        self.add_button.clicked.connect(self.add_from_entry)
        self.remove_button = QPushButton('Remove', self)
        self.remove_button.clicked.connect(self.remove_selected)
        row = QHBoxLayout()
        row.addWidget(self.entry, 1)
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.tree, 1)
        layout.addLayout(row)
        client.watchChanged.connect(self.show_values)
        client.connected.connect(lambda: self.show_values(self.client.state.watch))
        client.stateChanged.connect(self._update_buttons)
        self._update_buttons()

    def add_from_entry(self) -> None:
        expr = self.entry.text().strip()
        if expr:
            self.add(expr)
            self.entry.clear()

    def add(self, expr: str) -> None:
        key = watch_key(expr)
        if key not in self.items:
            self._item(key).setText(1, PENDING)
        self.client.add_watch(expr)

    def remove_selected(self) -> None:
        for item in self.tree.selectedItems():
            key = item.data(0, KEY_ROLE)
            self.client.remove_watch(key)
            self._drop(key)

    def value(self, expr: str) -> str | None:
        item = self.items.get(watch_key(expr))
        return item.text(1) if item is not None else None

    def _item(self, key: str) -> QTreeWidgetItem:
        item = self.items.get(key)
        if item is None:
            expr, group = split_watch_key(key)
            item = QTreeWidgetItem([expr if group == 'default' else f'{expr} ({group})', ''])
            item.setData(0, KEY_ROLE, key)
            item.setToolTip(0, key)
            self.tree.addTopLevelItem(item)
            self.items[key] = item
        return item

    def _drop(self, key: str) -> None:
        item = self.items.pop(key, None)
        if item is not None:
            self.tree.takeTopLevelItem(self.tree.indexOfTopLevelItem(item))

    def show_values(self, values: dict[str, str]) -> None:
        for key in [k for k, item in self.items.items()
                    if k not in values and item.text(1) != PENDING]:
            self._drop(key)
        for key, value in values.items():
            item = self._item(key)
            if item.text(1) != value:
                item.setText(1, value)
                item.setToolTip(1, value)
                error = value.startswith('<cannot be evaluated')
                item.setForeground(1, Qt.red if error else Qt.black)

    def _update_buttons(self, *_args: Any) -> None:
        enabled = self.client.is_connected and not self.client.viewonly
        self.add_button.setEnabled(enabled)
        self.remove_button.setEnabled(enabled)


__all__ = ['WatchPanel']
