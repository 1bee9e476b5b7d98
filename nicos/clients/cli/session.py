"""The CLI's client: follows the daemon's state, turns events into terminal output,
and reconnects by itself when the connection breaks.

Output goes to a :class:`View` (the interactive prompt, or plain stdout in batch
mode); every event is handled in the library's event thread.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from nicos.clients.base import ClientError, ConnectionFailed, LoginFailed, NicosClient
from nicos.protocols.daemon import (
    ACTION,
    ERROR,
    STATUS_IDLE,
    STATUS_IDLEEXC,
    STATUS_INBREAK,
    STATUS_RUNNING,
    STATUS_STOPPING,
    level_names,
)

from . import render

# The CLI shows neither plots nor live images, and never runs code for the daemon.
EVENT_MASK = ('livedata', 'dataset', 'datapoint', 'datacurve', 'clientexec', 'cache')
IDLE_STATES = (STATUS_IDLE, STATUS_IDLEEXC)
MAX_OUTCOMES = 200
RECONNECT_FIRST_DELAY = 0.5
RECONNECT_MAX_DELAY = 5.0

_TAG = re.compile(r'<[^>]*>')


class View(Protocol):
    def show(self, text: str) -> None:
        """Print *text* (one or more lines) above the prompt."""

    def refresh(self) -> None:
        """The daemon state changed; redraw the prompt."""


@dataclass
class Outcome:
    """How a request ended."""

    reqid: str
    success: bool
    stopped: bool = False  # stopped while running, or removed from the queue
    blocked: bool = False  # removed from the queue before it started
    error: str | None = None  # the last error message of the request


@dataclass
class DaemonState:
    """What the client knows about the daemon; updated from events."""

    connected: bool = False
    status: int = STATUS_IDLE
    lineno: int = -1
    script: str = ''
    scriptname: str = ''
    current: dict[str, Any] | None = None  # the request being executed
    requests: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    watch: dict[str, str] = field(default_factory=dict)
    action: str = ''
    mode: str = ''

    @property
    def idle(self) -> bool:
        return self.status in IDLE_STATES

    @property
    def busy(self) -> bool:
        return not self.idle or bool(self.requests)

    def valid_line(self) -> int | None:
        """The current line if it is a line of the script (else None)."""
        count = len(self.script.rstrip('\n').split('\n')) if self.script else 0
        return self.lineno if 1 <= self.lineno <= count else None

    def line_text(self) -> str:
        line = self.valid_line()
        if line is None:
            return ''
        return self.script.split('\n')[line - 1].strip()


class CliClient(NicosClient):
    """NicosClient for the terminal.

    *announce*: print state changes and queue changes (interactive mode).
    *json_lines*: print every event as a JSON line instead of text.
    """

    def __init__(self, view: View, paint: render.Painter, *, announce: bool = True,
                 json_lines: bool = False, verbose: bool = False,
                 auto_reconnect: bool = True) -> None:
        super().__init__()
        self.view = view
        self.paint = paint
        self.announce = announce
        self.json_lines = json_lines
        self.verbose = verbose
        self.auto_reconnect = auto_reconnect
        self.state = DaemonState()
        self.message_filter: Callable[[list[Any]], bool] | None = None
        self._lock = threading.RLock()  # state, outcomes, and the order of output
        self._outcome_cond = threading.Condition(self._lock)
        self._outcomes: OrderedDict[str, Outcome] = OrderedDict()
        self._stopping: set[str] = set()
        self._errors: dict[str, str] = {}
        self._credentials: tuple[str, int, str, str, bool] | None = None
        self._tls: ssl.SSLContext | None = None
        self._closing = threading.Event()
        self._broken = threading.Event()  # wakes the reconnecting thread
        self._supervisor: threading.Thread | None = None
        # Set by the interactive shell: runs a request for which the main
        # thread would wait, so that the emergency key works meanwhile.
        self.waiter: Callable[[Callable[[], Any]], Any] | None = None

    def ask(self, command: str, *args: Any, timeout: float | None = None) -> Any:
        """NicosClient.ask; in the main thread through the waiter, if one is set."""
        waiter = self.waiter
        if waiter is None or threading.current_thread() is not threading.main_thread():
            return super().ask(command, *args, timeout=timeout)
        return waiter(lambda: NicosClient.ask(self, command, *args, timeout=timeout))

    # -- connection ------------------------------------------------------------------

    def open(self, host: str, port: int, login: str, password: str,
             viewonly: bool = False, tls: ssl.SSLContext | None = None) -> None:
        """Connect and log in, then fetch the daemon's state.  The password is
        kept in memory (only) for reconnecting.  *tls*: connect with TLS (see
        nicos.clients.tls.client_context); reconnecting uses it as well."""
        self._credentials = (host, port, login, password, viewonly)
        self._tls = tls
        self.connect(host, port, login, password, viewonly=viewonly, eventmask=EVENT_MASK,
                     tls=tls or False)
        self._sync()

    def close(self) -> None:
        """Disconnect for good: no more reconnecting."""
        self._closing.set()
        self._broken.set()
        self.disconnect()
        thread = self._supervisor
        if thread is not None and thread is not threading.current_thread():
            thread.join(RECONNECT_MAX_DELAY + 1)

    def _sync(self) -> None:
        status = self.ask('getstatus')
        with self._lock:
            state = self.state
            state.connected = True
            state.status, state.lineno = _status_pair(status.get('status'))
            state.script = _text(status.get('script'))
            state.scriptname = _text(status.get('scriptname'))
            state.current = None
            if not state.idle and state.script:
                state.current = {'reqid': None, 'name': state.scriptname or None,
                                 'script': state.script}
            state.requests = OrderedDict(
                (req['reqid'], req) for req in status.get('requests', [])
                if isinstance(req, dict) and isinstance(req.get('reqid'), str))
            watch = status.get('watch')
            state.watch = dict(watch) if isinstance(watch, dict) else {}
            state.mode = _text(status.get('mode'))
        self.view.refresh()

    @property
    def level_name(self) -> str:
        return level_names.get(self.user_level or 0, str(self.user_level))

    def _supervise(self) -> None:
        """Reconnect whenever the connection broke, until close()."""
        while True:
            self._broken.wait()
            if self._closing.is_set():
                return
            self._broken.clear()
            if self.connected:
                continue  # a stale notice: already connected again
            if not self._reconnect():
                return

    def _reconnect(self) -> bool:
        """Try until connected (True), or until the login is refused or the
        client is closed (False)."""
        assert self._credentials is not None
        host, port, login, password, viewonly = self._credentials
        delay = RECONNECT_FIRST_DELAY
        while not self._closing.wait(delay):
            try:
                self.connect(host, port, login, password, viewonly=viewonly,
                             eventmask=EVENT_MASK, tls=self._tls or False)
                self._sync()
            except LoginFailed as err:
                self.view.show(self.paint(f'ERROR: reconnecting failed: {err}; giving up '
                                          f'(restart the client)', 'error'))
                self.disconnect()
                return False
            except ClientError:
                if self.connected:
                    self.disconnect()  # broke again right after the login
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
                continue
            if self._closing.is_set():
                self.disconnect()
                return False
            self.view.show(render.notice(
                f'reconnected to {host}:{port}; daemon is {render.state_name(self.state.status)}',
                self.paint))
            return True
        return False

    # -- event dispatch ----------------------------------------------------------------

    @contextlib.contextmanager
    def events_held(self) -> Iterator[None]:
        """Hold event processing (e.g. while submitting a script, so that its
        events are handled only once its request id is known)."""
        with self._lock:
            yield

    def signal(self, name: str, *args: Any) -> None:
        data = args[0] if args else None
        with self._lock:
            if self.json_lines and name not in ('connected', 'disconnected'):
                self.view.show(render.format_json(name, data))
            handler = getattr(self, f'_on_{name}', None)
            if handler is not None:
                handler(data)
        self.view.refresh()

    def _show(self, text: str | None) -> None:
        if text is not None and not self.json_lines:
            self.view.show(text)

    def _announce(self, text: str) -> None:
        if self.announce:
            self._show(render.notice(text, self.paint))

    def _on_broken(self, reason: Any) -> None:
        self.state.connected = False
        self._outcome_cond.notify_all()
        if self._closing.is_set():
            return
        if self.auto_reconnect and self._credentials is not None:
            self._show(self.paint(f'connection lost ({reason}); reconnecting ...', 'warning'))
            if self._supervisor is None:
                self._supervisor = threading.Thread(target=self._supervise,
                                                    name='nicos-reconnect', daemon=True)
                self._supervisor.start()
            self._broken.set()
        else:
            self._show(self.paint(f'ERROR: connection lost: {reason}', 'error'))

    def _on_disconnected(self, _data: Any) -> None:
        self.state.connected = False
        self._outcome_cond.notify_all()

    def _on_error(self, reason: Any) -> None:
        self._show(self.paint(f'ERROR: {reason}', 'error'))

    def _on_message(self, record: Any) -> None:
        if not isinstance(record, list) or len(record) < 6:
            return
        reqid = record[5]
        if record[2] == ACTION:
            self.state.action = render.clean(str(record[3]).strip())
            return
        if isinstance(reqid, str) and isinstance(record[2], int) and record[2] >= ERROR:
            self._errors[reqid] = render.clean(str(record[3]).strip())
        if self.message_filter is not None and not self.message_filter(record):
            return
        self._show(render.format_record(record, self.paint, verbose=self.verbose))

    def _on_simmessage(self, record: Any) -> None:
        text = render.format_record(record, self.paint, verbose=self.verbose)
        if text is not None:
            self._show('(dry run) ' + text)

    def _on_simresult(self, data: Any) -> None:
        self._announce('dry run finished' if isinstance(data, list) and data
                       and isinstance(data[0], int | float) and data[0] >= 0
                       else 'dry run failed')

    def _on_status(self, data: Any) -> None:
        state = self.state
        old, old_line = state.status, state.valid_line()
        state.status, state.lineno = _status_pair(data)
        new = state.status
        if new not in IDLE_STATES and state.valid_line() is None and old_line is not None:
            # a line outside the script (library code): keep showing the last one
            state.lineno = old_line
        current = state.current.get('reqid') if state.current else None
        if new == STATUS_STOPPING and current:
            self._stopping.add(current)
        if new == old:
            return
        if new == STATUS_INBREAK:
            line = state.valid_line()
            where = f' at line {line}' if line else ''
            self._announce(f'paused{where}; /continue to go on, /stop to stop')
        elif new == STATUS_RUNNING and old == STATUS_INBREAK:
            self._announce('continuing')
        elif new == STATUS_STOPPING:
            self._announce('stopping')

    def _on_request(self, request: Any) -> None:
        if not isinstance(request, dict) or 'script' not in request:
            return  # an emergency stop request carries no script
        state = self.state
        busy = state.busy
        state.requests[request['reqid']] = request
        if busy:
            self._announce(f'queued as #{len(state.requests)} ({render.short_id(request["reqid"])}'
                           f'): {render.request_label(request)} by {request.get("user", "?")}')

    def _on_processing(self, request: Any) -> None:
        if not isinstance(request, dict):
            return
        state = self.state
        reqid = request.get('reqid')
        state.requests.pop(reqid, None)
        updated = state.current is not None and state.current.get('reqid') == reqid
        state.current = request
        state.script = _text(request.get('script'))
        state.scriptname = _text(request.get('name'))
        if updated:
            self._announce(f'running script updated by {request.get("user", "?")}')
        else:
            self._announce(f'started: {render.request_label(request)} '
                           f'(by {request.get("user", "?")})')

    def _on_done(self, request: Any) -> None:
        if not isinstance(request, dict):
            return
        reqid = request.get('reqid')
        state = self.state
        success = bool(request.get('success'))
        stopped = reqid in self._stopping
        self._stopping.discard(reqid)
        if state.current is not None and state.current.get('reqid') in (reqid, None):
            state.current = None
            state.action = ''
        label = render.request_label(request)
        if success:
            self._announce(f'finished: {label}')
        elif stopped:
            self._announce(f'stopped: {label}')
        else:
            self._announce(f'failed: {label}')
        if isinstance(reqid, str):
            self._record(Outcome(reqid, success, stopped=stopped,
                                 error=self._errors.pop(reqid, None)))

    def _on_blocked(self, reqids: Any) -> None:
        if not isinstance(reqids, list) or not reqids:
            return
        removed = [self.state.requests.pop(reqid, None) for reqid in reqids]
        for reqid in reqids:
            if isinstance(reqid, str):
                self._record(Outcome(reqid, False, stopped=True, blocked=True,
                                     error='removed from the queue before it started'))
        labels = ', '.join(render.request_label(req) for req in removed if req)
        self._announce(f'removed from the queue: {labels or len(reqids)}')

    def _on_updated(self, request: Any) -> None:
        if isinstance(request, dict) and request.get('reqid') in self.state.requests:
            self.state.requests[request['reqid']] = request
            index = list(self.state.requests).index(request['reqid']) + 1
            self._announce(f'queued script #{index} updated by {request.get("user", "?")}')

    def _on_rearranged(self, reqids: Any) -> None:
        if isinstance(reqids, list):
            requests = self.state.requests
            order = [r for r in reqids if r in requests] + \
                [r for r in requests if r not in reqids]
            self.state.requests = OrderedDict((r, requests[r]) for r in order)

    def _on_watch(self, values: Any) -> None:
        if isinstance(values, dict):
            self.state.watch = {str(k): str(v) for k, v in values.items()}

    def _on_mode(self, mode: Any) -> None:
        if isinstance(mode, str) and mode != self.state.mode:
            if self.state.mode:
                self._announce(f'daemon mode is now {mode}')
            self.state.mode = mode

    def _on_prompt(self, data: Any) -> None:
        if isinstance(data, list) and data:
            self._announce(f'the script asks: {render.clean(str(data[0]))} '
                           f'(/continue when done, /stop to abort)')

    def _on_watchdog(self, data: Any) -> None:
        if isinstance(data, list) and len(data) >= 3:
            self._show(self.paint(f'WARNING: watchdog {data[0]}: {render.clean(str(data[2]))}',
                                  'warning'))

    def _on_showhelp(self, data: Any) -> None:
        if isinstance(data, list) and len(data) >= 2 and isinstance(data[1], str):
            self._show(render.clean(_TAG.sub('', data[1])).strip())

    def _on_experiment(self, data: Any) -> None:
        if isinstance(data, list) and data:
            self._announce(f'experiment is now {render.clean(str(data[0]))}')

    # -- outcomes of requests --------------------------------------------------------------

    def _record(self, outcome: Outcome) -> None:
        self._outcomes[outcome.reqid] = outcome
        while len(self._outcomes) > MAX_OUTCOMES:
            self._outcomes.popitem(last=False)
        self._outcome_cond.notify_all()

    def wait_outcome(self, reqid: str, timeout: float | None = None) -> Outcome | None:
        """Block until request *reqid* has ended; None when the connection ended
        first (or *timeout* passed)."""
        with self._outcome_cond:
            self._outcome_cond.wait_for(
                lambda: reqid in self._outcomes or not self.state.connected, timeout)
            return self._outcomes.get(reqid)

    def wait_closed(self) -> None:
        """Block until the connection has ended."""
        with self._outcome_cond:
            self._outcome_cond.wait_for(lambda: not self.state.connected)

    # -- submitting ----------------------------------------------------------------------------

    def submit(self, code: str, name: str = '') -> tuple[str, bool]:
        """Start *code* when the daemon is idle, else queue it.

        Returns (request id, queued).  Raises ClientError subclasses.
        """
        if self.state.busy:
            return self.run(code, name), True
        try:
            return self.run(code, name, queue=False), False
        except ClientError as err:
            if 'running' not in str(err):
                raise
        return self.run(code, name), True


def _status_pair(value: Any) -> tuple[int, int]:
    if isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value):
        return value[0], value[1]
    return STATUS_IDLE, -1


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ''


__all__ = ['CliClient', 'ConnectionFailed', 'DaemonState', 'LoginFailed', 'Outcome', 'View']
