"""The main window against a real daemon: connect, run scripts, steer them."""

from __future__ import annotations

import threading
from pathlib import Path

from guidaemon import gate_loop
from PyQt5.QtCore import Qt

from nicos.protocols.daemon import INPUT

WAIT_MS = 15000


def console_has(window, text: str) -> bool:
    return text in window.console.text()


def output_has(window, text: str) -> bool:
    """Text in a message that is not the echo of submitted code."""
    return any(text in str(record[3]) for record, _prefix in window.console.records
               if record[2] != INPUT)


def test_connected_window_shows_state(window) -> None:
    status = window.status_display
    assert status.connection_label.text() == 'connected'
    assert status.state_label.text() == 'idle'
    assert status.user_label.text().startswith('admin (admin')
    assert window.emergency_action.isEnabled()
    assert window.emergency_button.isEnabled()
    assert not window.break_action.isEnabled()
    assert not window.continue_action.isEnabled()
    assert not window.stop_action.isEnabled()
    assert window.editor.run_action.isEnabled()
    assert 'admin@127.0.0.1' in window.windowTitle()


def test_run_script_shows_current_line_and_output(window, qtbot, tmp_path: Path) -> None:
    gate = tmp_path / 'gate'
    script = "printinfo('hello from the gui')\n" + gate_loop(gate) + "printinfo('done')\n"
    window.editor.set_text(script)
    window.editor.run_action.trigger()
    qtbot.waitUntil(lambda: window.status_display.state_label.text() == 'running',
                    timeout=WAIT_MS)
    # the loop is lines 2-3; the line is marked in the editor and shown in the status bar
    qtbot.waitUntil(lambda: window.editor.edit.current_line in (2, 3), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.status_display.line_label.text() in ('line 2', 'line 3'),
                    timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.queue.current_view.current_line in (2, 3), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: console_has(window, 'hello from the gui'), timeout=WAIT_MS)
    assert window.break_action.isEnabled() and window.stop_action.isEnabled()
    assert window.editor.reqid is not None
    gate.touch()
    qtbot.waitUntil(lambda: console_has(window, 'done'), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.status_display.state_label.text() == 'idle',
                    timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.editor.edit.current_line is None, timeout=WAIT_MS)
    assert window.editor.info.text() == 'Finished.'


def test_failed_script_marks_error_line(window, qtbot) -> None:
    window.editor.set_text("x = 1\ny = 2\nz = x / (y - 2)\nprintinfo('never')\n")
    window.editor.run()
    qtbot.waitUntil(lambda: window.editor.edit.error_line == 3, timeout=WAIT_MS)
    assert 'ZeroDivisionError' in window.editor.info.text()
    assert window.editor.info.text().startswith('Line 3:')
    assert 'ZeroDivisionError' in window.editor.edit.error_text
    # editing removes the mark
    window.editor.edit.appendPlainText('# fixed')
    assert window.editor.edit.error_line is None


def test_syntax_error_marks_its_line(window, qtbot) -> None:
    window.editor.set_text("printinfo('a')\nx = (1,\n")
    window.editor.run()
    qtbot.waitUntil(lambda: window.editor.edit.error_line is not None, timeout=WAIT_MS)
    assert window.editor.edit.error_line in (2, 3)
    assert 'SyntaxError' in window.editor.info.text()


def test_break_continue_stop_from_toolbar(window, qtbot, tmp_path: Path) -> None:
    window.editor.set_text(gate_loop(tmp_path / 'never') + "printinfo('not reached')\n")
    window.editor.run()
    qtbot.waitUntil(window.break_action.isEnabled, timeout=WAIT_MS)
    # the toolbar buttons are the actions' widgets
    break_button = window.toolbar.widgetForAction(window.break_action)
    qtbot.mouseClick(break_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: window.status_display.state_label.text() == 'break',
                    timeout=WAIT_MS)
    assert window.continue_action.isEnabled() and not window.break_action.isEnabled()
    assert window.editor.edit.paused
    qtbot.mouseClick(window.toolbar.widgetForAction(window.continue_action), Qt.LeftButton)
    qtbot.waitUntil(lambda: window.status_display.state_label.text() == 'running',
                    timeout=WAIT_MS)
    qtbot.mouseClick(window.toolbar.widgetForAction(window.stop_action), Qt.LeftButton)
    qtbot.waitUntil(lambda: window.status_display.state_label.text() == 'idle',
                    timeout=WAIT_MS)
    assert not output_has(window, 'not reached')
    assert window.editor.info.text() != 'Finished.'


def test_break_and_continue_by_shortcut(window, qtbot, tmp_path: Path) -> None:
    window.editor.set_text(gate_loop(tmp_path / 'never'))
    window.editor.run()
    qtbot.waitUntil(window.break_action.isEnabled, timeout=WAIT_MS)
    window.activateWindow()
    window.editor.edit.setFocus()
    qtbot.keyClick(window.editor.edit, Qt.Key_F8)
    qtbot.waitUntil(lambda: window.client.state.status == 1, timeout=WAIT_MS)
    qtbot.keyClick(window.editor.edit, Qt.Key_F9)
    qtbot.waitUntil(lambda: window.client.state.status == 0, timeout=WAIT_MS)
    qtbot.keyClick(window.editor.edit, Qt.Key_F11)
    qtbot.waitUntil(lambda: window.client.state.idle, timeout=WAIT_MS)


def test_emergency_stop(window, qtbot, tmp_path: Path) -> None:
    # a long move: sth at 2 deg/s to 80 deg; the emergency stop must end it
    window.editor.set_text("maw(sth, 80)\nprintinfo('arrived')\n")
    window.editor.run()
    qtbot.waitUntil(lambda: window.devices.status_code('sth') == 220, timeout=WAIT_MS)
    # queue another script: the emergency stop drops the queue too
    window.client.run_script("printinfo('queued one')\n")
    qtbot.waitUntil(lambda: window.queue.list.count() == 1, timeout=WAIT_MS)
    assert window.emergency_button.isEnabled()
    qtbot.mouseClick(window.emergency_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: window.client.state.idle, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.devices.status_code('sth') == 200, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.queue.list.count() == 0, timeout=WAIT_MS)
    assert not output_has(window, 'arrived')
    assert not output_has(window, 'queued one')
    assert float(window.devices.value_text('sth')) < 80
    assert window.emergency_button.isEnabled()  # still there for the next time


def test_emergency_stop_by_shortcut_when_idle(window, qtbot) -> None:
    window.activateWindow()
    before = len(window.client.state.messages)
    qtbot.keyClick(window.console.input, Qt.Key_F12)
    qtbot.waitUntil(lambda: any('stop' in str(m[3]).lower()
                                for m in window.client.state.messages[before:]),
                    timeout=WAIT_MS)


def test_console_runs_code_and_evaluates(window, qtbot) -> None:
    line = window.console.input
    qtbot.keyClicks(line, "printinfo('typed in the console')")
    qtbot.keyClick(line, Qt.Key_Return)
    qtbot.waitUntil(lambda: console_has(window, 'typed in the console'), timeout=WAIT_MS)
    qtbot.keyClicks(line, '?6 * 7')
    qtbot.keyClick(line, Qt.Key_Return)
    qtbot.waitUntil(lambda: console_has(window, '= 42'), timeout=WAIT_MS)
    qtbot.keyClicks(line, '?undefined_name_xyz')
    qtbot.keyClick(line, Qt.Key_Return)
    qtbot.waitUntil(lambda: console_has(window, 'cannot be evaluated'), timeout=WAIT_MS)
    # history
    qtbot.keyClick(line, Qt.Key_Up)
    assert line.text() == '?undefined_name_xyz'
    qtbot.keyClick(line, Qt.Key_Up)
    qtbot.keyClick(line, Qt.Key_Up)
    assert line.text() == "printinfo('typed in the console')"
    qtbot.keyClick(line, Qt.Key_Down)
    assert line.text() == '?6 * 7'


def test_console_filters_by_level(window, qtbot) -> None:
    window.client.run_script("printinfo('plain info line')\nprintwarning('a warning line')\n")
    qtbot.waitUntil(lambda: console_has(window, 'a warning line'), timeout=WAIT_MS)
    assert console_has(window, 'plain info line')
    window.console.filter.setCurrentIndex(2)  # warnings and worse
    assert console_has(window, 'a warning line')
    assert not console_has(window, 'plain info line')
    window.console.filter.setCurrentIndex(1)
    assert console_has(window, 'plain info line')


def test_update_running_script(window, qtbot, tmp_path: Path) -> None:
    gate = tmp_path / 'gate'
    script = gate_loop(gate) + "printinfo('first version')\n"
    window.editor.set_text(script)
    window.editor.run()
    qtbot.waitUntil(lambda: window.editor.edit.current_line in (1, 2), timeout=WAIT_MS)
    window.editor.edit.setPlainText(gate_loop(gate) + "printinfo('second version')\n")
    window.editor.update_action.trigger()
    qtbot.waitUntil(lambda: window.editor.info.text() != 'Running.', timeout=WAIT_MS)
    assert window.editor.info.text() == 'Script updated.'
    gate.touch()
    qtbot.waitUntil(lambda: output_has(window, 'second version'), timeout=WAIT_MS)
    assert not output_has(window, 'first version')


def test_editor_files(window, tmp_path: Path) -> None:
    path = tmp_path / 'scan.py'
    path.write_text("move(sth, 1)\n")
    assert window.editor.load_file(str(path))
    assert window.editor.script_text() == "move(sth, 1)\n"
    assert not window.editor.modified
    assert 'scan.py' in window.docks['editor'].windowTitle()
    window.editor.edit.appendPlainText('wait(sth)')
    assert window.editor.modified
    assert window.docks['editor'].windowTitle().endswith('*')
    target = tmp_path / 'saved.py'
    assert window.editor.write_file(str(target))
    assert target.read_text() == "move(sth, 1)\n\nwait(sth)"
    assert not window.editor.modified


def test_simulate_shows_dry_run_output(window, qtbot) -> None:
    window.editor.set_text("printinfo('only simulated')\nmove(sth, 2)\n")
    window.editor.simulate_action.trigger()
    qtbot.waitUntil(lambda: console_has(window, '(sim) simulation'), timeout=WAIT_MS)
    assert console_has(window, "(sim) [")  # the dry run's messages, marked
    assert console_has(window, 'only simulated')
    assert window.client.state.idle


def test_emergency_stop_does_not_wait_for_busy_worker(window, qtbot, tmp_path: Path) -> None:
    window.editor.set_text(gate_loop(tmp_path / 'never'))
    window.editor.run()
    qtbot.waitUntil(lambda: window.client.state.status == 0, timeout=WAIT_MS)
    # occupy the command worker (as a slow query would), then stop everything
    release = threading.Event()
    window.client._submit(lambda: release.wait(WAIT_MS / 1000))
    window.client.ask('getstatus')  # waits behind it
    try:
        assert window.emergency_button.isEnabled()
        qtbot.mouseClick(window.emergency_button, Qt.LeftButton)
        qtbot.waitUntil(lambda: window.client.state.idle, timeout=WAIT_MS)
    finally:
        release.set()


def test_double_clicked_stop_does_not_cut_the_cleanup_short(window, qtbot,
                                                           tmp_path: Path) -> None:
    # the cleanup waits for a gate; a second stop would escalate and cut it short
    cleanup = ''.join('    ' + line + '\n' for line in gate_loop(tmp_path / 'gate').splitlines())
    window.editor.set_text('try:\n' + ''.join('    ' + line + '\n' for line in
                                            gate_loop(tmp_path / 'never').splitlines())
                           + 'finally:\n' + "    printinfo('cleaning up')\n" + cleanup
                           + "    printinfo('cleanup done')\n")
    window.editor.run()
    qtbot.waitUntil(window.stop_action.isEnabled, timeout=WAIT_MS)
    window.client.STOP_REPEAT_GUARD = 3600.0  # whatever the machine's speed: a double click
    stop_button = window.toolbar.widgetForAction(window.stop_action)
    qtbot.mouseClick(stop_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: output_has(window, 'cleaning up'), timeout=WAIT_MS)
    with qtbot.waitSignal(window.client.commandFailed, timeout=WAIT_MS) as refused:
        qtbot.mouseClick(stop_button, Qt.LeftButton)
    assert refused.args[0] == 'stop' and 'press Stop again' in refused.args[1]
    (tmp_path / 'gate').touch()
    qtbot.waitUntil(lambda: window.status_display.state_label.text() == 'idle',
                    timeout=WAIT_MS)
    assert output_has(window, 'cleanup done')
    assert not any('escalated' in str(record[3]) for record, _ in window.console.records)
