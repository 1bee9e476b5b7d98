"""Every device with value, unit and status colour, live from cache events;
a context menu moves a device (limits shown) or reads it anew."""

from __future__ import annotations

from typing import Any

from PyQt5.QtCore import QPoint, Qt
from PyQt5.QtGui import QBrush, QColor, QDoubleValidator
from PyQt5.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..client import QtClient
from ..dialogs import show_nonmodal
from ..values import (
    device_status_colour,
    device_status_text,
    format_value,
    parse_status,
    parse_value,
    to_float,
)
from .base import Panel

COL_NAME, COL_VALUE, COL_UNIT, COL_STATUS = range(4)


def _limits(value: Any) -> tuple[float, float] | None:
    if isinstance(value, str):
        value = parse_value(value)
    if isinstance(value, list | tuple) and len(value) == 2:
        low, high = to_float(value[0]), to_float(value[1])
        if low is not None and high is not None:
            return low, high
    return None


def limits_expr(device: str) -> str:
    """Expression for the current user limits of *device*."""
    return f'session.getDevice({device!r}).userlimits'


class MoveDialog(QDialog):
    """Target entry for one device, with its limits; sends ``move(dev, target)``."""

    def __init__(self, panel: DevicesPanel, device: str) -> None:
        super().__init__(panel)
        self.setAttribute(Qt.WA_DeleteOnClose)
        self.panel = panel
        self.device = device
        self.setWindowTitle(f'Move {device}')
        self.setObjectName('move-dialog')
        info = panel.info(device)
        unit = str(info.get('unit') or '')
        self.userlimits = _limits(info.get('userlimits'))
        self.abslimits = _limits(info.get('abslimits'))
        fmt = str(info.get('fmtstr') or '%.3f')
        current = panel.value_text(device)
        self.unit, self.fmt = unit, fmt
        self.target = QLineEdit(self)
        self.target.setObjectName('move-target')
        self.target.setText(current)
        form = QFormLayout()
        form.addRow('Current value:', QLabel(f'{current} {unit}'.strip(), self))
        self.limits_label = QLabel('unknown', self)
        form.addRow('User limits:', self.limits_label)
        self._show_limits(self.userlimits)
        if self.abslimits is not None and self.abslimits != self.userlimits:
            form.addRow('Absolute limits:', QLabel(
                f'{self.abslimits[0]} .. {self.abslimits[1]} {unit}', self))
        form.addRow(f'Target ({unit}):' if unit else 'Target:', self.target)
        self.message = QLabel('', self)
        self.message.setStyleSheet('color: #c00000')
        buttons = QDialogButtonBox(self)
        self.move_button = buttons.addButton('Move', QDialogButtonBox.AcceptRole)
        buttons.addButton(QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.send)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.message)
        layout.addWidget(buttons)
        # the limits may have changed since the connect: ask for the current ones
        panel.client.eval(limits_expr(device), self._show_limits)

    def _show_limits(self, value: Any) -> None:
        limits = _limits(value)
        if limits is None:
            return
        self.userlimits = limits
        low, high = limits
        try:
            text = f'{self.fmt % low} .. {self.fmt % high}'
        except (TypeError, ValueError):
            text = f'{low:g} .. {high:g}'
        self.limits_label.setText(f'{text} {self.unit}'.rstrip())
        validator = QDoubleValidator(low, high, 10, self)
        validator.setNotation(QDoubleValidator.StandardNotation)
        self.target.setValidator(validator)
        self.panel._remember(self.device, 'userlimits', list(limits))

    def target_value(self) -> float | str | None:
        text = self.target.text().strip()
        try:
            value = float(text)
        except ValueError:
            return text or None
        return value

    def send(self) -> None:
        value = self.target_value()
        if value is None:
            self.message.setText('Enter a target.')
            return
        if isinstance(value, float) and self.userlimits is not None:
            low, high = self.userlimits
            if not low <= value <= high:
                self.message.setText(f'{value} is outside the limits {low} .. {high}.')
                return
        self.panel.client.run_script(f'move({self.device}, {value!r})')
        self.close()


class DevicesPanel(Panel):
    name = 'devices'
    title = 'Devices'

    def __init__(self, client: QtClient, parent: QWidget | None = None) -> None:
        super().__init__(client, parent)
        self.tree = QTreeWidget(self)
        self.tree.setObjectName('devices-tree')
        self.tree.setHeaderLabels(['Device', 'Value', 'Unit', 'Status'])
        self.tree.setRootIsDecorated(False)
        self.tree.setSortingEnabled(True)
        self.tree.sortByColumn(COL_NAME, Qt.AscendingOrder)
        self.tree.setContextMenuPolicy(Qt.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._context_menu)
        self.tree.itemDoubleClicked.connect(
            lambda item, _col: self.open_move_dialog(item.text(COL_NAME)))
        header = self.tree.header()
        header.setSectionResizeMode(COL_NAME, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(COL_VALUE, QHeaderView.Stretch)
        header.setSectionResizeMode(COL_UNIT, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(COL_STATUS, QHeaderView.ResizeToContents)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.tree)
        self.items: dict[str, QTreeWidgetItem] = {}  # lower-case name -> item
        client.connected.connect(self._on_connected)
        client.devicesChanged.connect(self.rebuild)
        client.cacheChanged.connect(self._on_cache)

    # ---------------------------------------------------------------- model

    def info(self, device: str) -> dict[str, Any]:
        info = self.client.state.device_info.get(device)
        return dict(info) if isinstance(info, dict) else {}

    def value_text(self, device: str) -> str:
        item = self.items.get(device.lower())
        return item.text(COL_VALUE) if item is not None else ''

    def status_text(self, device: str) -> str:
        item = self.items.get(device.lower())
        return item.text(COL_STATUS) if item is not None else ''

    def _on_connected(self) -> None:
        self.rebuild()
        cache = self.client.state.cache
        missing = [name for name in self.client.state.devices
                   if f'{name.lower()}/value' not in cache
                   or f'{name.lower()}/status' not in cache]
        if missing:
            self.client.poll_devices(missing)

    def rebuild(self) -> None:
        state = self.client.state
        self.tree.setSortingEnabled(False)
        self.tree.clear()
        self.items.clear()
        for name in state.devices:
            info = self.info(name)
            item = QTreeWidgetItem([name, '', str(info.get('unit') or ''), ''])
            description = str(info.get('description') or '')
            item.setToolTip(COL_NAME, description)
            self.tree.addTopLevelItem(item)
            self.items[name.lower()] = item
        for key, (stamp, value) in list(state.cache.items()):
            self._on_cache(key, value, stamp)
        self.tree.setSortingEnabled(True)

    def _on_cache(self, key: str, value: str, _stamp: float) -> None:
        device, _, param = key.partition('/')
        item = self.items.get(device)
        if item is None:
            return
        if param == 'value':
            name = item.text(COL_NAME)
            parsed = parse_value(value) if value else ''
            item.setText(COL_VALUE, format_value(parsed, str(self.info(name).get('fmtstr') or '')))
            item.setToolTip(COL_VALUE, value)
        elif param == 'status':
            status = parse_status(value)
            if status is None:
                item.setText(COL_STATUS, '')
                item.setBackground(COL_STATUS, QBrush())
                return
            item.setText(COL_STATUS, device_status_text(status))
            item.setBackground(COL_STATUS, QBrush(QColor(device_status_colour(status[0]))))
            item.setData(COL_STATUS, Qt.UserRole, status[0])
        elif param == 'unit':
            item.setText(COL_UNIT, str(parse_value(value)))
            self._remember(item.text(COL_NAME), 'unit', parse_value(value))
        elif param in ('userlimits', 'abslimits', 'fmtstr'):
            self._remember(item.text(COL_NAME), param, parse_value(value))
        elif param == 'description':
            # from the cache: the only source for guests (eval needs level USER)
            description = str(parse_value(value))
            item.setToolTip(COL_NAME, description)
            self._remember(item.text(COL_NAME), param, description)

    def _remember(self, device: str, key: str, value: Any) -> None:
        info = self.client.state.device_info.setdefault(device, {})
        if isinstance(info, dict):
            info[key] = value

    def status_code(self, device: str) -> int | None:
        item = self.items.get(device.lower())
        if item is None:
            return None
        code = item.data(COL_STATUS, Qt.UserRole)
        return int(code) if code is not None else None

    # -------------------------------------------------------------- actions

    def _context_menu(self, pos: QPoint) -> None:
        item = self.tree.itemAt(pos)
        if item is None:
            return
        menu = self.context_menu(item.text(COL_NAME))
        menu.popup(self.tree.viewport().mapToGlobal(pos))

    def context_menu(self, device: str) -> QMenu:
        menu = QMenu(self)
        menu.setAttribute(Qt.WA_DeleteOnClose)
        info = self.info(device)
        move = menu.addAction(f'Move {device}...', lambda: self.open_move_dialog(device))
        move.setEnabled(self.client.can_control and bool(info.get('moveable', True)))
        limits = _limits(info.get('userlimits'))
        if limits is not None:
            shown = menu.addAction(f'Limits: {limits[0]:g} .. {limits[1]:g} '
                                   f"{info.get('unit') or ''}".rstrip())
            shown.setEnabled(False)
        read = menu.addAction('Read now', lambda: self.client.poll_devices([device]))
        read.setEnabled(self.client.is_connected)
        return menu

    def open_move_dialog(self, device: str) -> MoveDialog | None:
        if not self.client.can_control or not self.info(device).get('moveable', True):
            return None
        dialog = MoveDialog(self, device)
        show_nonmodal(dialog)
        return dialog


__all__ = ['DevicesPanel', 'MoveDialog']
