"""Non-interactive use: ``-c CODE``, ``run FILE [--wait]`` and ``--json``.

The script's own messages are streamed to stdout while it runs (with ``--json``:
every event as one JSON line, then a ``result`` line); the exit status tells how
the script ended (see :data:`EXIT_CODES`).
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

from nicos.clients.base import ClientError
from nicos.protocols.daemon import INPUT

from . import render
from .session import CliClient, Outcome

EXIT_OK = 0
EXIT_FAILED = 1  # the script raised an error
EXIT_USAGE = 2  # wrong command line or profile file
EXIT_STOPPED = 3  # stopped, or removed from the queue before it started
EXIT_LOGIN = 4  # the daemon refused the login
EXIT_CONNECTION = 5  # cannot connect, or the connection broke
EXIT_INTERRUPTED = 130  # Ctrl-C while waiting; the script goes on

EXIT_CODES = {
    EXIT_OK: 'success',
    EXIT_FAILED: 'the script failed with an error',
    EXIT_USAGE: 'invalid command line or profile file',
    EXIT_STOPPED: 'the script was stopped or removed from the queue',
    EXIT_LOGIN: 'login refused',
    EXIT_CONNECTION: 'cannot connect, or the connection was lost',
    EXIT_INTERRUPTED: 'interrupted with Ctrl-C (the script goes on in the daemon)',
}


class StreamView:
    """Plain output to a stream (stdout); nothing to redraw."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def show(self, text: str) -> None:
        stream = self.stream or sys.stdout
        with self._lock:
            stream.write(text + '\n')
            stream.flush()

    def refresh(self) -> None:
        pass


def _say(text: str) -> None:
    sys.stderr.write(f'nicos-client: {text}\n')
    sys.stderr.flush()


def run_script(client: CliClient, code: str, name: str, *, wait: bool) -> int:
    """Queue *code*; with *wait*, stream its output and return its exit status."""
    try:
        with client.events_held():
            reqid = client.run(code, name)
            # the script's own output, without the echo of its text
            client.message_filter = lambda record: record[5] == reqid and record[2] != INPUT
    except ClientError as err:
        _say(f'cannot submit the script: {err}')
        return EXIT_CONNECTION if not client.connected else EXIT_FAILED
    if not wait:
        if client.json_lines:
            client.view.show(render.format_json('queued', {'reqid': reqid}))
        else:
            client.view.show(f'queued as {reqid}')
        return EXIT_OK
    try:
        outcome = client.wait_outcome(reqid)
    except KeyboardInterrupt:
        _say('interrupted; the script goes on in the daemon')
        return EXIT_INTERRUPTED
    code_ = exit_status(outcome)
    if client.json_lines:
        client.view.show(render.format_json('result', _result_data(reqid, outcome, code_)))
    if outcome is None:
        _say('connection to the daemon lost before the script ended')
    elif outcome.blocked:
        _say('the script was removed from the queue before it started')
    elif outcome.stopped:
        _say('the script was stopped')
    elif not outcome.success:
        _say(f'the script failed: {outcome.error or "unknown error"}')
    return code_


def exit_status(outcome: Outcome | None) -> int:
    if outcome is None:
        return EXIT_CONNECTION
    if outcome.success:
        return EXIT_OK
    if outcome.stopped:
        return EXIT_STOPPED
    return EXIT_FAILED


def _result_data(reqid: str, outcome: Outcome | None, code: int) -> dict[str, Any]:
    return {'reqid': reqid,
            'success': bool(outcome and outcome.success),
            'stopped': bool(outcome and outcome.stopped),
            'error': outcome.error if outcome else 'connection lost',
            'exit_status': code}


def monitor(client: CliClient) -> int:
    """``--json`` alone: print every event until Ctrl-C or the connection ends."""
    try:
        client.wait_closed()
    except KeyboardInterrupt:
        return EXIT_OK
    _say('connection to the daemon lost')
    return EXIT_CONNECTION
