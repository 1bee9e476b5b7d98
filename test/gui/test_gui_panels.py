"""Queue, watch, devices and plot panels against a real daemon."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from guidaemon import gate_loop
from PyQt5.QtCore import QModelIndex, Qt
from PyQt5.QtWidgets import QApplication

from nicos.clients.gui.panels.devices import MoveDialog
from nicos.clients.gui.panels.queue import ScriptViewer

WAIT_MS = 15000


def queued_names(window) -> list[str]:
    return [str(r.get('name')) for r in window.client.state.requests]


def list_texts(window) -> list[str]:
    widget = window.queue.list
    return [widget.item(row).text().split()[0] for row in range(widget.count())]


def test_queue_rearrange_remove_view(window, qtbot, tmp_path: Path) -> None:
    client = window.client
    gate = tmp_path / 'gate'
    client.run_script(gate_loop(gate), 'blocker')
    qtbot.waitUntil(lambda: not client.state.idle, timeout=WAIT_MS)
    for name in ('first', 'second', 'third'):
        client.run_script(f"printinfo('{name}')\n", name)
    qtbot.waitUntil(lambda: window.queue.list.count() == 3, timeout=WAIT_MS)
    assert list_texts(window) == ['first', 'second', 'third']
    assert window.status_display.request_label.text().endswith('(+3 queued)')

    # dragging an item moves a row of the list's model: the same path as a drop
    model = window.queue.list.model()
    assert model.moveRow(QModelIndex(), 2, QModelIndex(), 0)
    qtbot.waitUntil(lambda: queued_names(window) == ['third', 'first', 'second'],
                    timeout=WAIT_MS)
    qtbot.waitUntil(lambda: list_texts(window) == ['third', 'first', 'second'],
                    timeout=WAIT_MS)

    # buttons: down, remove, view
    window.queue.list.setCurrentRow(0)
    qtbot.mouseClick(window.queue.down_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: queued_names(window) == ['first', 'third', 'second'],
                    timeout=WAIT_MS)
    window.queue.list.setCurrentRow(2)
    assert window.queue.remove_button.isEnabled()
    qtbot.mouseClick(window.queue.remove_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: queued_names(window) == ['first', 'third'], timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.queue.list.count() == 2, timeout=WAIT_MS)
    window.queue.list.setCurrentRow(1)
    qtbot.mouseClick(window.queue.view_button, Qt.LeftButton)
    viewers = [w for w in QApplication.topLevelWidgets()
               if isinstance(w, ScriptViewer) and w.isVisible()]
    assert len(viewers) == 1 and 'third' in viewers[0].windowTitle()
    viewers[0].close()

    # the rest runs in the new order
    order: list[str] = []
    window.client.message.connect(
        lambda record: order.append(record[3].strip())
        if record[3].strip() in ('first', 'third', 'second') and record[2] == 20 else None)
    gate.touch()
    qtbot.waitUntil(lambda: len(order) == 2, timeout=WAIT_MS)
    assert order == ['first', 'third']
    qtbot.waitUntil(lambda: window.queue.list.count() == 0, timeout=WAIT_MS)


def test_watch_values_change(window, qtbot) -> None:
    panel = window.watch
    qtbot.keyClicks(panel.entry, 'gui_watched')
    qtbot.mouseClick(panel.add_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: (panel.value('gui_watched') or '').startswith('<cannot be'),
                    timeout=WAIT_MS)
    window.client.run_script('gui_watched = 5\n')
    qtbot.waitUntil(lambda: panel.value('gui_watched') == '5', timeout=WAIT_MS)
    window.client.run_script("gui_watched = 'changed'\n")
    qtbot.waitUntil(lambda: panel.value('gui_watched') == "'changed'", timeout=WAIT_MS)
    # an expression with a colon stays whole
    panel.add("[1, 2, 3][1:]")
    qtbot.waitUntil(lambda: panel.value('[1, 2, 3][1:]') == '[2, 3]', timeout=WAIT_MS)
    panel.items['gui_watched:default'].setSelected(True)
    qtbot.mouseClick(panel.remove_button, Qt.LeftButton)
    assert panel.value('gui_watched') is None
    qtbot.waitUntil(lambda: 'gui_watched:default' not in window.client.state.watch,
                    timeout=WAIT_MS)


def test_device_list_updates_and_move_dialog(window, qtbot) -> None:
    panel = window.devices
    names = {panel.tree.topLevelItem(i).text(0) for i in range(panel.tree.topLevelItemCount())}
    assert {'mono', 'sth', 'stt', 'sx', 'T', 'det'} <= names
    qtbot.waitUntil(lambda: panel.value_text('T') != '', timeout=WAIT_MS)
    item = panel.items['sx']
    assert item.text(2) == 'mm'
    qtbot.waitUntil(lambda: panel.status_code('sx') == 200, timeout=WAIT_MS)
    start = float(panel.value_text('sx'))
    target = 1.5 if abs(start - 1.5) > 0.5 else -1.5

    # the context menu offers the move with the limits
    menu = panel.context_menu('sx')
    texts = [a.text() for a in menu.actions()]
    assert 'Move sx...' in texts
    assert any(t.startswith('Limits: -25 .. 25 mm') for t in texts)
    menu.close()

    # the dialog asks for the current limits; change them first
    with qtbot.waitSignal(window.client.requestDone, timeout=WAIT_MS):
        window.client.run_script('sx.userlimits = (-20, 20)\n')
    dialog = panel.open_move_dialog('sx')
    assert isinstance(dialog, MoveDialog)
    qtbot.waitUntil(lambda: dialog.limits_label.text() == '-20.00 .. 20.00 mm',
                    timeout=WAIT_MS)
    dialog.target.setText('22')  # outside the limits: refused in the dialog
    dialog.send()
    assert 'outside the limits' in dialog.message.text()
    dialog.target.setText(str(target))
    qtbot.mouseClick(dialog.move_button, Qt.LeftButton)
    # busy while it moves (orange), then ok at the target, all from cache events
    qtbot.waitUntil(lambda: panel.status_code('sx') == 220, timeout=WAIT_MS)
    assert 'busy' in panel.status_text('sx')
    qtbot.waitUntil(lambda: panel.status_code('sx') == 200, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: panel.value_text('sx') == f'{target:.2f}', timeout=WAIT_MS)
    colour = item.background(3).color().name()
    assert colour == '#c8f0c8'
    with qtbot.waitSignal(window.client.requestDone, timeout=WAIT_MS):
        window.client.run_script('sx.userlimits = (-25, 25)\n')


def test_history_plot_fetches_and_follows_live_values(window, qtbot) -> None:
    history = window.plots.history
    history.key_choice.setEditText('stt')
    history.fetch()
    qtbot.waitUntil(lambda: 'stored value' in history.info.text(), timeout=WAIT_MS)
    assert history.key == 'stt/value' and history.live
    before = len(history.times)
    with qtbot.waitSignal(window.client.requestDone, timeout=WAIT_MS):
        window.client.run_script('maw(stt, 22 if stt.read() < 21 else 20)\n')
    assert len(history.times) > before + 1  # live values while it moved
    xs, _ys = history.curve.getData()
    assert len(xs) == len(history.times)
    assert all(abs(x - time.time()) < 3600 for x in xs)
    # fetched again, the move is in the stored history (if the daemon keeps one)
    replies: list[list[list[float]]] = []
    window.client.history('stt/value', time.time() - 600, time.time() + 1, replies.append)
    qtbot.waitUntil(lambda: bool(replies), timeout=WAIT_MS)
    history.fetch()
    qtbot.waitUntil(lambda: 'stored value' in history.info.text(), timeout=WAIT_MS)
    if replies[0]:
        assert len(history.times) >= 2
        assert history.times == sorted(history.times)


def test_scan_plot_from_events(window, qtbot) -> None:
    """dataset/datapoint events as the daemon sends them, fed through the client."""
    scan = window.plots.scan
    dataset = {'uid': 'scan-uid-1', 'counter': 7, 'scaninfo': 'scan sth 0 .. 1',
               'xindex': 0, 'xvalueinfo': [{'name': 'sth', 'unit': 'deg'}],
               'yvalueinfo': [{'name': 'timer', 'unit': 's', 'type': 'time'},
                              {'name': 'mon1', 'unit': 'cts', 'type': 'monitor'},
                              {'name': 'ctr1', 'unit': 'cts', 'type': 'counter'}]}
    window.client._dispatch('dataset', (dataset,))
    for i in range(4):
        window.client._dispatch('datapoint', (['scan-uid-1', [i * 0.5], [0.1, 100, i * 10]],))
    assert scan.points() == ([0.0, 0.5, 1.0, 1.5], [0.0, 10.0, 20.0, 30.0])
    assert scan.y_choice.currentText() == 'ctr1 (cts)'
    assert '#7' in scan.title.text() and '4 point(s)' in scan.title.text()
    scan.y_choice.setCurrentIndex(1)
    scan.y_choice.activated.emit(1)
    assert scan.points()[1] == [100.0, 100.0, 100.0, 100.0]
    # a datapoint of an unknown scan starts a new one
    window.client._dispatch('datapoint', (['other', [1], [2]],))
    assert scan.shown is not None and scan.shown.uid == 'other'
    assert scan.scan_choice.count() == 2


def test_scan_plot_live_from_daemon(window, qtbot) -> None:
    """A real scan in the daemon; skipped while the daemon has no scan command."""
    available: list[bool] = []
    window.client.eval("callable(globals().get('scan'))", available.append,
                       error=lambda _e: available.append(False))
    qtbot.waitUntil(lambda: bool(available), timeout=WAIT_MS)
    if not available[0]:
        pytest.skip('the daemon has no scan command yet')
    scan = window.plots.scan
    qtbot.waitUntil(lambda: window.devices.value_text('sth') != '', timeout=WAIT_MS)
    start = round(float(window.devices.value_text('sth')), 1)
    # small steps from where sth is, so that the scan takes little time
    window.client.run_script(f'scan(sth, {start}, 0.05, 5, t=0.01)\n')
    qtbot.waitUntil(lambda: len(scan.points()[0]) == 5, timeout=WAIT_MS)
    xs, ys = scan.points()
    assert xs == pytest.approx([start + 0.05 * i for i in range(5)], abs=1e-6)
    assert len(ys) == 5
    assert scan.shown is not None and scan.shown.ynames
    assert '5 point(s)' in scan.title.text()
