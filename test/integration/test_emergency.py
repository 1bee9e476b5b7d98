"""NicosClient.emergency(): the emergency stop never waits behind a slow request.

The slow request is an ``exec`` (the daemon runs it in the connection's own thread
and replies when it has finished) that waits for a gate file; each test opens the
gate itself once it has checked what happened meanwhile, so nothing waits long.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from daemonproc import IDLE_STATES, WAIT, DaemonProcess, EventRecorder, Gate, RawConnection

from nicos.clients.base import VIA_CONTROL, VIA_EXTRA, ConnectionFailed, LoginFailed

STATUS_RUNNING = 0


def slow_exec_code(gate: Gate, marker: str) -> str:
    """Code for ``exec`` that prints *marker*, then waits for *gate* (at most ~20 s,
    so that a failing test cannot leave the daemon's connection thread busy)."""
    return (f"print({marker[:4]!r} + {marker[4:]!r})\n"
            f"for _ in range(2000):\n"
            f"    if __import__('os').path.exists({str(gate.path)!r}):\n"
            f"        break\n"
            f"    __import__('time').sleep(0.01)\n")


@contextmanager
def slow_exec(client: EventRecorder, gate: Gate,
              marker: str = 'emg-exec-waiting') -> Iterator[dict[str, Any]]:
    """Run the slow exec in a thread; yields once the daemon is executing it (so its
    reply is outstanding on the client's control connection).  On exit the gate is
    opened and the thread joined; the dict then holds 'value' or 'error'."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome['value'] = client.ask('exec', slow_exec_code(gate, marker))
        except BaseException as err:  # noqa: BLE001 - checked by the test
            outcome['error'] = err

    since = client.mark()
    thread = threading.Thread(target=run, name='slow-exec', daemon=True)
    thread.start()
    outcome['thread'] = thread
    try:
        client.wait_for('message', lambda d: d[3] == marker + '\n', since=since)
        yield outcome
    finally:
        gate.open()
        thread.join(WAIT)
    assert not thread.is_alive(), 'the slow exec did not end after its gate was opened'


def test_emergency_while_a_slow_exec_holds_the_control_connection(
        client: EventRecorder, gates: Callable[[], Gate]) -> None:
    script_gate, exec_gate = gates(), gates()
    reqid = client.run(script_gate.wait_code(), 'emg-loop.py', queue=False)
    client.wait_status(STATUS_RUNNING)
    with slow_exec(client, exec_gate) as outcome:
        since = client.mark()
        assert client.emergency() == VIA_EXTRA
        done = client.wait_done(reqid)
        assert done.data['success'] is False
        client.wait_for('status', lambda d: d[0] in IDLE_STATES, since=since)
        texts = [m[3] for m in client.messages(since)]
        assert 'Immediate stop requested by admin\n' in texts, texts
        # the daemon stopped the script while the exec's reply is still outstanding
        assert outcome['thread'].is_alive()
    # the reply on the first connection arrived undisturbed, and it stays usable
    assert outcome == {'thread': outcome['thread'], 'value': None}
    assert client.ask('getstatus')['status'][0] in IDLE_STATES
    assert client.emergency() == VIA_CONTROL  # idle again: the first connection


def test_emergency_on_an_idle_connection_uses_it(client: EventRecorder,
                                                 daemon: DaemonProcess) -> None:
    since = client.mark()
    assert client.emergency() == VIA_CONTROL
    client.wait_for('message', lambda d: d[3] == 'Immediate stop requested by admin\n',
                    since=since)
    assert client.connected
    # a guest may stop too, on either path
    guest = daemon.connect('guest')
    try:
        assert guest.emergency() == VIA_CONTROL
        client.wait_for('message', lambda d: d[3] == 'Immediate stop requested by guest\n')
    finally:
        guest.disconnect()
    # after a logout the credentials are gone: no emergency connection either
    with pytest.raises(ConnectionFailed, match='not connected'):
        guest.emergency()


def test_emergency_gets_through_to_a_full_daemon(new_daemon: Callable[..., DaemonProcess],
                                                 gates: Callable[[], Gate]) -> None:
    # one login at most: ordinary logins are refused, the emergency one gets a
    # reserved slot
    daemon = new_daemon('emergency-full', maxlogins=1)
    client = daemon.connect('admin')
    try:
        with pytest.raises(LoginFailed, match='too many clients logged in'):
            daemon.connect('user')
        reqid = client.run('sleep(3600)\n')
        client.wait_for('status', lambda d: d[0] == STATUS_RUNNING)
        with slow_exec(client, gates()) as outcome:
            assert client.emergency() == VIA_EXTRA
            client.wait_done(reqid)
            assert outcome['thread'].is_alive()
        assert outcome.get('value', outcome.get('error')) is None
        # the daemon is gone: both paths fail, with the reason
        since = client.mark()
        daemon.stop_and_check()
        client.wait_for('disconnected', since=since)
        with pytest.raises(ConnectionFailed, match='emergency connection: cannot connect'):
            client.emergency()
    finally:
        client.disconnect()


def test_an_emergency_login_may_send_nothing_else(daemon: DaemonProcess) -> None:
    conn = RawConnection(daemon.host, daemon.port)
    try:
        ok, reply = conn.login('guest', daemon.accounts['guest'].password, purpose='emergency')
        assert ok, reply
        ok, reason = conn.command('queue', '', 'print(1)')
        assert not ok and 'made for an emergency stop' in reason
        ok, reason = conn.command('getstatus')
        assert not ok and 'made for an emergency stop' in reason
        assert conn.command('getversion')[0]
        assert conn.command('emergency')[0]
    finally:
        conn.close()
