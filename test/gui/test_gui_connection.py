"""Connecting: the dialog and its profiles, refused logins, view-only, reconnecting
after a daemon restart, and the saved layout."""

from __future__ import annotations

from pathlib import Path

from guidaemon import PASSWORDS
from PyQt5.QtCore import QSettings, Qt

from nicos.clients.gui.client import ConnectionParams, ConnState
from nicos.clients.gui.connect import load_profiles, parse_address

WAIT_MS = 15000


def test_connect_dialog_connects_and_remembers_profile(make_window, gui_daemon, qtbot,
                                                       settings_file: Path) -> None:
    window = make_window(connect=False)
    assert window.status_display.connection_label.text() == 'offline'
    assert not window.emergency_action.isEnabled()
    dialog = window.show_connect_dialog()
    assert dialog.isVisible() and not dialog.isModal()
    dialog.profile.setEditText('test daemon')
    dialog.host.setText('127.0.0.1')
    dialog.port.setValue(gui_daemon.port)
    dialog.user.setText('user')
    qtbot.mouseClick(dialog.save_button, Qt.LeftButton)
    dialog.password.setText(PASSWORDS['user'][0])
    qtbot.mouseClick(dialog.connect_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: window.client.is_connected, timeout=WAIT_MS)
    assert window.status_display.user_label.text() == 'user (user)'
    assert window.emergency_action.isEnabled()

    profiles = load_profiles(QSettings(str(settings_file), QSettings.IniFormat))
    assert profiles['test daemon'] == ConnectionParams('127.0.0.1', gui_daemon.port, 'user')
    assert PASSWORDS['user'][0] not in settings_file.read_text()

    # the next dialog starts with the last profile
    again = window.show_connect_dialog()
    assert again.host.text() == '127.0.0.1' and again.user.text() == 'user'
    assert again.password.text() == ''
    again.delete_current_profile()
    assert 'test daemon' not in load_profiles(QSettings(str(settings_file),
                                                        QSettings.IniFormat))
    again.close()


def test_wrong_password_is_reported(make_window, gui_daemon, qtbot) -> None:
    window = make_window(connect=False)
    window.client.connect_to(ConnectionParams('127.0.0.1', gui_daemon.port, 'admin'), 'wrong')
    qtbot.waitUntil(lambda: window.client.last_error != '', timeout=WAIT_MS)
    assert window.client.conn_state is ConnState.DISCONNECTED
    assert 'Invalid username or password' in window.client.last_error
    assert window.status_display.connection_label.text() == 'offline'
    assert not window.emergency_action.isEnabled()


def test_viewonly_can_only_watch_and_emergency_stop(make_window, gui_daemon, qtbot) -> None:
    window = make_window(gui_daemon, user='admin', viewonly=True)
    assert 'view-only' in window.status_display.user_label.text()
    assert not window.editor.run_action.isEnabled()
    assert not window.queue.remove_button.isEnabled()
    assert window.emergency_action.isEnabled()
    window.console.execute("printinfo('should not run')")
    assert 'view-only' in window.console.text()
    # evaluation is allowed
    window.console.execute('?1 + 1')
    qtbot.waitUntil(lambda: '= 2' in window.console.text(), timeout=WAIT_MS)


def test_guest_sees_devices_and_may_emergency_stop(make_window, gui_daemon, qtbot) -> None:
    window = make_window(gui_daemon, user='guest')
    assert window.status_display.user_label.text() == 'guest (guest)'
    assert not window.editor.run_action.isEnabled()
    assert window.emergency_action.isEnabled()
    assert 'sth' in window.devices.items
    window.emergency_action.trigger()
    failures: list[str] = []
    window.client.commandFailed.connect(lambda cmd, reason: failures.append(cmd))
    qtbot.waitUntil(lambda: any('stop' in str(m[3]).lower()
                                for m in window.client.state.messages), timeout=WAIT_MS)
    assert 'emergency' not in failures


def test_reconnects_after_daemon_restart(make_window, new_gui_daemon, qtbot) -> None:
    daemon = new_gui_daemon()
    window = make_window(daemon)
    states: list[ConnState] = []
    window.client.stateChanged.connect(lambda state, _text: states.append(state))
    assert daemon.stop() == 0
    qtbot.waitUntil(lambda: window.client.conn_state is ConnState.RECONNECTING,
                    timeout=WAIT_MS)
    assert window.status_display.connection_label.text() == 'reconnecting'
    # The emergency stop stays available; with the daemon down it says why it failed.
    assert window.emergency_action.isEnabled()
    with qtbot.waitSignal(window.client.commandFailed, timeout=WAIT_MS) as failed:
        window.emergency_action.trigger()
    assert failed.args[0] == 'emergency' and 'emergency connection' in failed.args[1]
    # Held in the reconnecting state with the daemon back: the emergency stop logs in
    # on a connection of its own.
    qtbot.waitUntil(lambda: window.client._pending is None, timeout=WAIT_MS)
    window.client._reconnect_timer.stop()  # no attempt under way, none scheduled
    daemon.start()  # same port, same key, same users
    with qtbot.waitSignal(window.client.emergencySent, timeout=WAIT_MS) as sent:
        window.emergency_action.trigger()
    assert sent.args == ['second connection']
    assert window.client.conn_state is ConnState.RECONNECTING
    window.client._reconnect_timer.start(0)
    qtbot.waitUntil(lambda: window.client.is_connected, timeout=WAIT_MS)
    assert window.status_display.connection_label.text() == 'connected'
    assert window.status_display.state_label.text() == 'idle'
    assert window.emergency_action.isEnabled()
    assert 'sth' in window.devices.items
    # and it works: run something
    window.client.run_script("printinfo('after the restart')\n")
    qtbot.waitUntil(lambda: 'after the restart' in window.console.text(), timeout=WAIT_MS)
    window.client.disconnect_from()
    assert window.client.conn_state is ConnState.DISCONNECTED
    assert ConnState.RECONNECTING in states


def test_layout_and_history_are_remembered(make_window, qtbot, settings_file: Path) -> None:
    window = make_window(connect=False)
    window.docks['watch'].hide()
    window.docks['plots'].setFloating(True)
    window.console.input.set_history(['move(sth, 1)', '?sth.read()'])
    window.close()
    again = make_window(connect=False)
    assert not again.docks['watch'].isVisible()
    assert again.docks['plots'].isFloating()
    assert again.console.input.history == ['move(sth, 1)', '?sth.read()']
    again.reset_layout_action.trigger()
    assert again.docks['watch'].isVisible() or not again.docks['watch'].isFloating()
    assert not again.docks['plots'].isFloating()


def test_parse_address() -> None:
    assert parse_address('alice@host:1400') == ConnectionParams('host', 1400, 'alice')
    assert parse_address('host', 'bob') == ConnectionParams('host', 1301, 'bob')
    assert parse_address('[::1]:1302').host == '::1'
