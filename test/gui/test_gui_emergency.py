"""The emergency stop button while the GUI's control connection waits for a slow reply."""

from __future__ import annotations

from pathlib import Path

from guidaemon import gate_loop
from PyQt5.QtCore import Qt

from nicos.protocols.daemon import INPUT

WAIT_MS = 15000


def output_has(window, text: str) -> bool:
    return any(text in str(record[3]) for record, _prefix in window.console.records
               if record[2] != INPUT)


def slow_eval_expr(gate: Path) -> str:
    """An expression that prints a marker, waits for *gate* (at most ~20 s, so that a
    failing test cannot keep the daemon busy) and then returns a marker."""
    wait = (f"next((i for i in range(2000) if __import__('os').path.exists({str(gate)!r}) "
            f"or __import__('time').sleep(0.01)), None)")
    return f"(print('gui-eval-' + 'waiting'), {wait}, 'gui-eval-' + 'done')[2]"


def test_emergency_button_while_a_slow_eval_waits(window, qtbot, tmp_path: Path) -> None:
    window.editor.set_text(gate_loop(tmp_path / 'never'))
    window.editor.run()
    qtbot.waitUntil(lambda: window.client.state.status == 0, timeout=WAIT_MS)
    gate = tmp_path / 'eval-gate'
    # the console's ?expr is an eval: its reply is outstanding until the gate opens
    window.console.execute('?' + slow_eval_expr(gate))
    try:
        qtbot.waitUntil(lambda: output_has(window, 'gui-eval-waiting'), timeout=WAIT_MS)
        with qtbot.waitSignal(window.client.emergencySent, timeout=WAIT_MS) as sent:
            qtbot.mouseClick(window.emergency_button, Qt.LeftButton)
        assert sent.args == ['second connection']
        assert window.statusBar().currentMessage() == \
            'emergency stop sent (on the second connection)'
        qtbot.waitUntil(lambda: window.client.state.idle, timeout=WAIT_MS)
        assert 'emergency stop sent (on the second connection)' in window.console.text()
        # the script was stopped while the eval still waits for its reply
        assert "'gui-eval-done'" not in window.console.text()
    finally:
        gate.touch()
    # the eval's reply arrives undisturbed on the first connection
    qtbot.waitUntil(lambda: "= 'gui-eval-done'" in window.console.text(), timeout=WAIT_MS)
    assert window.client.is_connected


def test_emergency_shortcut_when_idle_uses_the_control_connection(window, qtbot) -> None:
    window.activateWindow()
    with qtbot.waitSignal(window.client.emergencySent, timeout=WAIT_MS) as sent:
        qtbot.keyClick(window.console.input, Qt.Key_F12)
    assert sent.args == ['control connection']
