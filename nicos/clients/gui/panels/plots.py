"""Plots: the current scan live (``dataset``/``datapoint`` events) and the
history of a device value over a chosen time range (``gethistory``)."""

from __future__ import annotations

import os
import time
from typing import Any

os.environ.setdefault('PYQTGRAPH_QT_LIB', 'PyQt5')

import pyqtgraph as pg  # noqa: E402
from PyQt5.QtCore import QDateTime  # noqa: E402
from PyQt5.QtWidgets import (  # noqa: E402
    QCheckBox,
    QComboBox,
    QDateTimeEdit,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..client import QtClient  # noqa: E402
from ..scandata import ScanData, ScanStore  # noqa: E402
from ..values import parse_value, to_float  # noqa: E402
from .base import Panel  # noqa: E402

# (label, seconds back from now); 0 = custom range from the date fields
RANGES = (('last 10 minutes', 600), ('last hour', 3600), ('last 6 hours', 6 * 3600),
          ('last day', 86400), ('last week', 7 * 86400), ('custom range', 0))
MAX_LIVE_POINTS = 100000


def _plot_widget(parent: QWidget, date_axis: bool = False) -> pg.PlotWidget:
    axes = {'bottom': pg.DateAxisItem(orientation='bottom')} if date_axis else None
    widget = pg.PlotWidget(parent, background='w', axisItems=axes)
    widget.showGrid(x=True, y=True, alpha=0.3)
    widget.getPlotItem().getAxis('left').setPen('k')
    widget.getPlotItem().getAxis('bottom').setPen('k')
    widget.getPlotItem().getAxis('left').setTextPen('k')
    widget.getPlotItem().getAxis('bottom').setTextPen('k')
    return widget


class ScanPlot(QWidget):
    """Live plot of the scans; follows the newest scan unless told otherwise."""

    def __init__(self, client: QtClient, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.store = ScanStore()
        self.shown: ScanData | None = None
        self.scan_choice = QComboBox(self)
        self.scan_choice.setObjectName('scan-choice')
        self.scan_choice.setMinimumContentsLength(20)
        self.scan_choice.activated.connect(self._scan_chosen)
        self.y_choice = QComboBox(self)
        self.y_choice.setObjectName('scan-y')
        self.y_choice.activated.connect(lambda _i: self.redraw())
        self.follow = QCheckBox('follow new scans', self)
        self.follow.setChecked(True)
        self.title = QLabel('No scan yet', self)
        self.title.setObjectName('scan-title')
        self.plot = _plot_widget(self)
        self.curve = self.plot.plot([], [], pen=pg.mkPen('#1f4fd0', width=2), symbol='o',
                                    symbolSize=6, symbolBrush='#1f4fd0')
        row = QHBoxLayout()
        row.addWidget(QLabel('Scan:', self))
        row.addWidget(self.scan_choice, 1)
        row.addWidget(QLabel('Y:', self))
        row.addWidget(self.y_choice)
        row.addWidget(self.follow)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.title)
        layout.addWidget(self.plot, 1)
        client.dataset.connect(self.on_dataset)
        client.datapoint.connect(self.on_datapoint)

    def on_dataset(self, data: Any) -> None:
        self._changed(self.store.on_dataset(data))

    def on_datapoint(self, data: Any) -> None:
        self._changed(self.store.on_datapoint(data))

    def _changed(self, result: tuple[ScanData, bool] | None) -> None:
        if result is None:
            return
        scan, new = result
        if new:
            self.scan_choice.insertItem(0, scan.title, scan.uid)
            while self.scan_choice.count() > len(self.store.scans):
                self.scan_choice.removeItem(self.scan_choice.count() - 1)
            if self.follow.isChecked() or self.shown is None:
                self.show_scan(scan)
                return
        index = self.scan_choice.findData(scan.uid)
        if index >= 0 and self.scan_choice.itemText(index) != scan.title:
            self.scan_choice.setItemText(index, scan.title)
        if scan is self.shown:
            self._fill_y_choice()
            self.redraw()

    def _scan_chosen(self, index: int) -> None:
        scan = self.store.scans.get(self.scan_choice.itemData(index))
        if scan is not None:
            self.show_scan(scan)

    def show_scan(self, scan: ScanData) -> None:
        self.shown = scan
        index = self.scan_choice.findData(scan.uid)
        if index >= 0:
            self.scan_choice.setCurrentIndex(index)
        self.y_choice.clear()
        self._fill_y_choice()
        self.redraw()

    def _fill_y_choice(self) -> None:
        scan = self.shown
        if scan is None:
            return
        names = [f'{n} ({u})' if u else n
                 for n, u in zip(scan.ynames, scan.yunits + [''] * len(scan.ynames),
                                 strict=False)]
        current = [self.y_choice.itemText(i) for i in range(self.y_choice.count())]
        if names != current:
            keep = self.y_choice.currentIndex()
            self.y_choice.clear()
            self.y_choice.addItems(names)
            self.y_choice.setCurrentIndex(keep if 0 <= keep < len(names) else scan.default_y())

    def redraw(self) -> None:
        scan = self.shown
        if scan is None:
            self.curve.setData([], [])
            return
        column = max(0, self.y_choice.currentIndex())
        xs, ys = scan.curve(column)
        self.curve.setData(xs, ys)
        item = self.plot.getPlotItem()
        item.setLabel('bottom', scan.x_label())
        item.setLabel('left', self.y_choice.currentText() or 'y')
        self.title.setText(f'{scan.title}: {scan.npoints} point(s)')

    def points(self) -> tuple[list[float], list[float]]:
        """The data of the curve shown (for tests and screenshots)."""
        xs, ys = self.curve.getData()
        return ([] if xs is None else list(xs)), ([] if ys is None else list(ys))


class HistoryPlot(QWidget):
    """A device value over a time range; continues live while the range ends now."""

    def __init__(self, client: QtClient, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.key = ''
        self.live = False
        self.times: list[float] = []
        self.values: list[float] = []
        self.key_choice = QComboBox(self)
        self.key_choice.setObjectName('history-key')
        self.key_choice.setEditable(True)
        self.key_choice.setMinimumContentsLength(14)
        self.range_choice = QComboBox(self)
        for label, seconds in RANGES:
            self.range_choice.addItem(label, seconds)
        self.range_choice.setCurrentIndex(1)
        self.range_choice.currentIndexChanged.connect(self._range_changed)
        now = QDateTime.currentDateTime()
        self.from_edit = QDateTimeEdit(now.addSecs(-3600), self)
        self.to_edit = QDateTimeEdit(now, self)
        for edit in (self.from_edit, self.to_edit):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat('yyyy-MM-dd HH:mm')
        self.fetch_button = QPushButton('Show', self)
        self.fetch_button.clicked.connect(self.fetch)
        self.key_choice.lineEdit().returnPressed.connect(self.fetch)
        self.info = QLabel('Choose a device value and a time range.', self)
        self.plot = _plot_widget(self, date_axis=True)
        self.curve = self.plot.plot([], [], pen=pg.mkPen('#c03020', width=2),
                                    stepMode=None)
        row = QHBoxLayout()
        row.addWidget(QLabel('Value:', self))
        row.addWidget(self.key_choice, 1)
        row.addWidget(self.range_choice)
        row.addWidget(self.from_edit)
        row.addWidget(QLabel('to', self))
        row.addWidget(self.to_edit)
        row.addWidget(self.fetch_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.info)
        layout.addWidget(self.plot, 1)
        self._range_changed(self.range_choice.currentIndex())
        client.connected.connect(self.fill_keys)
        client.devicesChanged.connect(self.fill_keys)
        client.cacheChanged.connect(self._on_cache)

    def fill_keys(self) -> None:
        current = self.key_choice.currentText()
        keys = sorted({f'{d.lower()}/value' for d in self.client.state.devices}
                      | {k for k in self.client.state.cache if k.endswith('/value')})
        self.key_choice.clear()
        self.key_choice.addItems(keys)
        self.key_choice.setEditText(current or (keys[0] if keys else ''))

    def _range_changed(self, _index: int) -> None:
        custom = self.range_choice.currentData() == 0
        self.from_edit.setEnabled(custom)
        self.to_edit.setEnabled(custom)

    def time_range(self) -> tuple[float, float, bool]:
        """(from, to, live) in Unix seconds."""
        seconds = int(self.range_choice.currentData())
        if seconds:
            now = time.time()
            return now - seconds, now, True
        start = self.from_edit.dateTime().toMSecsSinceEpoch() / 1000
        end = self.to_edit.dateTime().toMSecsSinceEpoch() / 1000
        return start, end, end >= time.time()

    def fetch(self) -> None:
        key = self.key_choice.currentText().strip().lower()
        if not key:
            return
        if '/' not in key:
            key += '/value'
        start, end, live = self.time_range()
        self.key, self.live = key, live
        self.times, self.values = [], []
        self.curve.setData([], [])
        self.info.setText(f'Fetching the history of {key} ...')
        self.client.history(key, start, end,
                            result=lambda data: self._show(key, data),
                            error=lambda err: self.info.setText(f'No history: {err}'))

    def _show(self, key: str, data: Any) -> None:
        if key != self.key:
            return  # another request was made meanwhile
        points: list[tuple[float, float]] = []
        for entry in data if isinstance(data, list) else []:
            if isinstance(entry, list | tuple) and len(entry) == 2:
                stamp = to_float(entry[0])
                value = to_float(parse_value(entry[1]) if isinstance(entry[1], str)
                                 else entry[1])
                if stamp is not None and value is not None:
                    points.append((stamp, value))
        points.sort()
        # live values that arrived while the request ran come after the history
        live = list(zip(self.times, self.values, strict=True))
        last = points[-1][0] if points else float('-inf')
        points += [p for p in live if p[0] > last]
        self.times = [p[0] for p in points]
        self.values = [p[1] for p in points]
        self._redraw()
        suffix = ' (continues live)' if self.live else ''
        self.info.setText(f'{key}: {len(data) if isinstance(data, list) else 0} '
                          f'stored value(s){suffix}')

    def _on_cache(self, key: str, value: str, stamp: float) -> None:
        if not self.live or key != self.key:
            return
        number = to_float(parse_value(value)) if value else None
        if number is None:
            return
        self.times.append(stamp)
        self.values.append(number)
        if len(self.times) > MAX_LIVE_POINTS:
            del self.times[:1000], self.values[:1000]
        self._redraw()

    def _redraw(self) -> None:
        self.curve.setData(self.times, self.values)
        self.plot.getPlotItem().setLabel('left', self.key)


class PlotsPanel(Panel):
    name = 'plots'
    title = 'Plots'

    def __init__(self, client: QtClient, parent: QWidget | None = None) -> None:
        super().__init__(client, parent)
        self.tabs = QTabWidget(self)
        self.scan = ScanPlot(client, self)
        self.history = HistoryPlot(client, self)
        self.tabs.addTab(self.scan, 'Scan')
        self.tabs.addTab(self.history, 'History')
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.tabs)


__all__ = ['HistoryPlot', 'PlotsPanel', 'ScanPlot']
