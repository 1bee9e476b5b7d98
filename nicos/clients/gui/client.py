"""The Qt bridge to the daemon.

Threads:

- the **GUI thread** owns :class:`QtClient` and every widget;
- the client library's **event thread** (one per connection) only emits
  ``_Relay.event``; the signal is queued into the GUI thread;
- **worker threads** (a QThreadPool) run everything that waits for the daemon:
  connecting, logging in, and every command; results come back to the GUI
  thread through ``_Relay.taskDone`` (queued as well);
- commands run in one worker, in the order given; connecting has a pool of
  its own, and so do the steering commands (break, continue, stop, finish),
  so that they never wait for a free worker;
- the emergency stop has a pool of its own as well, and it uses
  ``NicosClient.emergency()``: when a request is outstanding on the control
  connection (a slow eval), it is sent on a second, short-lived connection
  instead of waiting behind it.

Events and task results travel through the same queued signal connection, so
they reach the GUI thread in the order in which they happened.

After a login the state is fetched (``getstatus``, messages, device values) in
the worker; events that arrive meanwhile are held back and replayed after the
snapshot has been applied, so panels always see the snapshot first and then
the changes.
"""

from __future__ import annotations

import enum
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PyQt5.QtCore import QObject, Qt, QThreadPool, QTimer, pyqtSignal

from nicos.clients.base import (
    ClientError,
    ConnectionFailed,
    DaemonError,
    LoginFailed,
    NicosClient,
    UnsupportedReply,
)
from nicos.protocols.daemon import (
    ACTION,
    DEFAULT_PORT,
    ERROR,
    STATUS_IDLE,
    USER,
    level_names,
)

from .values import IDLE_STATES, parse_status, watch_key

log = logging.getLogger(__name__)

# Events the GUI never shows (live images); the daemon does not send them.
EVENT_MASK = ('livedata',)
MESSAGES_ON_CONNECT = 2000
CONNECT_TIMEOUT = 15.0
# Commands sent by a pool of their own, so that they never wait for a free
# worker behind slower requests (the client library still sends one request
# at a time on the control connection).  The emergency stop is not among
# them: see QtClient.emergency().
URGENT_COMMANDS = frozenset({'break', 'continue', 'stop', 'finish'})
# Delays between reconnection attempts (the last one repeats until connected,
# or until the user disconnects).
RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0)

# One eval on connect describes every device: unit, format, whether it can be
# moved, limits, description.  Only attributes are read, nothing is moved.
DEVICE_INFO_EXPR = (
    "{n: {'unit': str(getattr(d, 'unit', '')), 'fmtstr': str(getattr(d, 'fmtstr', '')), "
    "'moveable': hasattr(d, 'isAllowed'), 'userlimits': getattr(d, 'userlimits', None), "
    "'abslimits': getattr(d, 'abslimits', None), "
    "'description': str(getattr(d, 'description', ''))} "
    "for n, d in session.devices.items()}"
)


def device_poll_expr(name: str) -> str:
    """Expression reading status and value of one device (publishes both)."""
    return f'session.getDevice({name!r}).poll()'


class ConnState(enum.Enum):
    DISCONNECTED = 'disconnected'
    CONNECTING = 'connecting'
    CONNECTED = 'connected'
    RECONNECTING = 'reconnecting'


@dataclass(frozen=True)
class ConnectionParams:
    host: str = 'localhost'
    port: int = DEFAULT_PORT
    user: str = ''
    viewonly: bool = False
    # TLS (daemons of this project only); tls_ca: PEM file of the CA(s) to trust
    # instead of the system's, '' for the system's.
    tls: bool = False
    tls_ca: str = ''

    @property
    def address(self) -> str:
        host = f'[{self.host}]' if ':' in self.host else self.host
        return f'{self.user}@{host}:{self.port}'


@dataclass
class DaemonState:
    """What the GUI knows about the daemon; changed only in the GUI thread."""

    status: int = STATUS_IDLE
    lineno: int = -1
    script: str = ''
    scriptname: str = ''
    current: dict[str, Any] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    watch: dict[str, str] = field(default_factory=dict)
    mode: str = ''
    action: str = ''
    devices: list[str] = field(default_factory=list)
    device_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    cache: dict[str, tuple[float, str]] = field(default_factory=dict)
    messages: list[list[Any]] = field(default_factory=list)
    # request id -> the last error message record of that request
    errors: dict[str, list[Any]] = field(default_factory=dict)
    # request id -> its 'done' event (the last few), for replies that come late
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def idle(self) -> bool:
        return self.status in IDLE_STATES


class _Relay(QObject):
    """Signals emitted from foreign threads; connected (queued) to QtClient."""

    event = pyqtSignal(int, str, object)   # connection generation, name, args
    taskDone = pyqtSignal(int, bool, object)  # task id, ok, result or exception


class _Connection(NicosClient):
    """One connection attempt of the client library; forwards every signal."""

    def __init__(self, relay: _Relay, generation: int) -> None:
        super().__init__()
        self._relay = relay
        self.generation = generation

    def signal(self, name: str, *args: Any) -> None:
        # Called in the event thread (or a worker): only emit, never touch Qt objects.
        self._relay.event.emit(self.generation, name, args)


class _Task:
    """A callable run in a worker thread; the result goes back through the relay."""

    def __init__(self, relay: _Relay, task_id: int, func: Callable[[], Any]) -> None:
        self.relay = relay
        self.task_id = task_id
        self.func = func

    def __call__(self) -> None:
        try:
            result = self.func()
        except BaseException as err:  # noqa: BLE001 - handed to the GUI thread
            self.relay.taskDone.emit(self.task_id, False, err)
        else:
            self.relay.taskDone.emit(self.task_id, True, result)


Callback = Callable[[Any], None]


class QtClient(QObject):
    """The daemon as the GUI sees it: state, signals, asynchronous commands."""

    # connection
    stateChanged = pyqtSignal(object, str)  # ConnState, human-readable text
    connected = pyqtSignal()                # after the snapshot has been applied
    disconnected = pyqtSignal()
    commandFailed = pyqtSignal(str, str)    # command, reason
    emergencySent = pyqtSignal(str)         # how: 'control connection' / 'second connection'
    # daemon state (all after DaemonState has been updated)
    statusChanged = pyqtSignal(int, int)    # status, line
    message = pyqtSignal(object)            # message record
    simMessage = pyqtSignal(object)
    simResult = pyqtSignal(object)
    actionChanged = pyqtSignal(str)
    requestStarted = pyqtSignal(object)     # 'processing' request dict
    requestDone = pyqtSignal(object)        # 'done' request dict (with success)
    queueChanged = pyqtSignal()
    watchChanged = pyqtSignal(object)       # dict key -> repr
    cacheChanged = pyqtSignal(str, str, float)  # key, value text, time
    devicesChanged = pyqtSignal()
    modeChanged = pyqtSignal(str)
    dataset = pyqtSignal(object)
    datapoint = pyqtSignal(object)
    datacurve = pyqtSignal(object)
    prompt = pyqtSignal(object)
    eventReceived = pyqtSignal(str, object)  # every event, after the specific signal

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = DaemonState()
        self.params = ConnectionParams()
        self.conn_state = ConnState.DISCONNECTED
        self.user_level: int | None = None
        self.banner: dict[str, Any] = {}
        self.last_error = ''
        self._relay = _Relay()
        self._relay.event.connect(self._on_relay_event, Qt.QueuedConnection)
        self._relay.taskDone.connect(self._on_task_done, Qt.QueuedConnection)
        # Commands run one after the other, in the order they were given.
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        # Connecting may take long (timeouts); it must not hold up commands.
        self._connect_pool = QThreadPool(self)
        self._connect_pool.setMaxThreadCount(2)
        # Steering commands do not wait behind queries (still in their order).
        self._urgent_pool = QThreadPool(self)
        self._urgent_pool.setMaxThreadCount(1)
        # Emergency stops wait for nothing, not even for each other (each one
        # that finds the control connection busy opens a connection of its own).
        self._emergency_pool = QThreadPool(self)
        self._emergency_pool.setMaxThreadCount(4)
        self._task_ids = itertools.count(1)
        self._callbacks: dict[int, tuple[Callback | None, Callback | None]] = {}
        self._generation = 0
        self._conn: _Connection | None = None   # the live connection (after sync)
        self._pending: _Connection | None = None  # connecting / syncing
        # The broken connection, kept while reconnecting: its saved login still
        # opens a second connection for emergency().
        self._lost: _Connection | None = None
        self._held: list[tuple[str, tuple[Any, ...]]] | None = None
        self._password = ''
        self._attempt = 0
        self._last_stop = float('-inf')  # time.monotonic() of the last stop sent
        self.requestStarted.connect(self._forget_last_stop)
        self._reconnect_timer = QTimer(self)
        self._reconnect_timer.setSingleShot(True)
        self._reconnect_timer.timeout.connect(self._attempt_connect)

    # ------------------------------------------------------------- properties

    @property
    def is_connected(self) -> bool:
        return self.conn_state is ConnState.CONNECTED

    @property
    def can_emergency(self) -> bool:
        """Connected, or reconnecting after a connection that had logged in."""
        return self.is_connected or (self.conn_state is ConnState.RECONNECTING
                                     and self._lost is not None)

    @property
    def viewonly(self) -> bool:
        return self.params.viewonly

    @property
    def can_control(self) -> bool:
        """Connected, not view-only and at least level USER."""
        return (self.is_connected and not self.params.viewonly
                and (self.user_level or 0) >= USER)

    @property
    def level_name(self) -> str:
        if self.user_level is None:
            return ''
        return level_names.get(self.user_level, str(self.user_level))

    # ------------------------------------------------------------- connecting

    def connect_to(self, params: ConnectionParams, password: str) -> None:
        """Connect and log in (in a worker).  The password is kept in memory
        for reconnecting after a broken connection, never written anywhere."""
        self._drop_connection()
        self.params = params
        self._password = password
        self._attempt = 0
        self.last_error = ''
        self._set_state(ConnState.CONNECTING, f'connecting to {params.address} ...')
        self._attempt_connect()

    def disconnect_from(self) -> None:
        """Log out; no more reconnecting."""
        was_connected = self.is_connected
        self._drop_connection()
        self._password = ''
        self._set_state(ConnState.DISCONNECTED, 'disconnected')
        if was_connected:
            self.disconnected.emit()

    def shutdown(self, timeout_ms: int = 3000) -> None:
        """Disconnect and wait (bounded) for the worker threads; at exit."""
        self.disconnect_from()
        for pool in (self._pool, self._connect_pool, self._urgent_pool, self._emergency_pool):
            pool.waitForDone(timeout_ms)

    def _drop_connection(self) -> None:
        self._reconnect_timer.stop()
        self._generation += 1  # events and results of old connections are ignored
        self._held = None
        for conn in (self._conn, self._pending):
            if conn is not None:
                self._connect_pool.start(conn.disconnect)
        self._conn = self._pending = None
        self._forget_lost()

    def _forget_lost(self) -> None:
        if self._lost is not None:
            self._connect_pool.start(self._lost.disconnect)  # forgets its credentials
            self._lost = None

    def _attempt_connect(self) -> None:
        self._generation += 1
        generation = self._generation
        conn = _Connection(self._relay, generation)
        self._pending = conn
        self._held = []
        params, password = self.params, self._password

        def work() -> dict[str, Any]:
            conn.connect(params.host, params.port, params.user, password,
                         viewonly=params.viewonly, eventmask=EVENT_MASK,
                         timeout=CONNECT_TIMEOUT, tls=params.tls,
                         cafile=(params.tls_ca or None) if params.tls else None)
            try:
                return _fetch_snapshot(conn)
            except ClientError:
                conn.disconnect()
                raise

        self._submit(work, lambda snapshot: self._on_connect_done(conn, snapshot),
                     lambda err: self._on_connect_failed(conn, err), self._connect_pool)

    def _on_connect_done(self, conn: _Connection, snapshot: dict[str, Any]) -> None:
        if conn.generation != self._generation:
            self._connect_pool.start(conn.disconnect)  # the user gave up meanwhile
            return
        self._pending = None
        self._conn = conn
        self._forget_lost()
        self.user_level = conn.user_level
        self.banner = dict(conn.banner)
        self._attempt = 0
        self._apply_snapshot(snapshot)
        self._set_state(ConnState.CONNECTED,
                        f'connected to {self.params.address} ({self.level_name})')
        held, self._held = self._held or [], None
        self.connected.emit()
        known = {(m[1], m[3]) for m in self.state.messages if len(m) > 3}
        for name, args in held:
            if name == 'message' and args and _message_key(args[0]) in known:
                continue
            self._dispatch(name, args)
        if not conn.connected:
            # It broke while the snapshot was being applied: follow it up.
            self._connection_lost(conn.generation, 'connection lost')

    def _on_connect_failed(self, conn: _Connection, err: BaseException) -> None:
        if conn.generation != self._generation:
            return
        self._pending = None
        self._held = None
        reason = str(err) or type(err).__name__
        retry = (self.conn_state is ConnState.RECONNECTING
                 and not isinstance(err, LoginFailed | DaemonError))
        if retry:
            self._schedule_reconnect(reason)
            return
        self.last_error = reason
        self._password = ''
        self._forget_lost()  # its saved login holds the password too
        self._set_state(ConnState.DISCONNECTED, f'not connected: {reason}')

    def _schedule_reconnect(self, reason: str) -> None:
        delay = RECONNECT_DELAYS[min(self._attempt, len(RECONNECT_DELAYS) - 1)]
        self._attempt += 1
        self._set_state(ConnState.RECONNECTING,
                        f'connection lost ({reason}); reconnecting to {self.params.address}'
                        f' (attempt {self._attempt}) ...')
        self._reconnect_timer.start(int(delay * 1000))

    def _connection_lost(self, generation: int, reason: str) -> None:
        if generation != self._generation or self.conn_state is not ConnState.CONNECTED:
            return
        self._lost, self._conn = self._conn, None
        self.disconnected.emit()
        self._schedule_reconnect(reason)

    def _set_state(self, state: ConnState, text: str) -> None:
        self.conn_state = state
        self.stateChanged.emit(state, text)

    # ---------------------------------------------------------------- tasks

    def _submit(self, func: Callable[[], Any], on_result: Callback | None = None,
                on_error: Callback | None = None, pool: QThreadPool | None = None) -> None:
        task_id = next(self._task_ids)
        self._callbacks[task_id] = (on_result, on_error)
        (pool or self._pool).start(_Task(self._relay, task_id, func))

    def _on_task_done(self, task_id: int, ok: bool, value: Any) -> None:
        on_result, on_error = self._callbacks.pop(task_id, (None, None))
        callback = on_result if ok else on_error
        if callback is not None:
            try:
                callback(value)
            except Exception:
                log.exception('GUI callback failed')

    def ask(self, command: str, *args: Any, result: Callback | None = None,
            error: Callback | None = None, quiet: bool = False,
            timeout: float | None = None) -> bool:
        """Send *command* from a worker thread.  *result* gets the reply and
        *error* the exception, both in the GUI thread.  Failures are also
        reported with ``commandFailed`` unless *quiet*.  False when not
        connected (nothing sent)."""
        conn = self._conn
        if conn is None or not self.is_connected:
            if not quiet:
                self.commandFailed.emit(command, 'not connected')
            return False

        def failed(err: BaseException) -> None:
            if not quiet and not (isinstance(err, ConnectionFailed) and conn is not self._conn):
                self.commandFailed.emit(command, str(err) or type(err).__name__)
            if error is not None:
                error(err)

        self._submit(lambda: conn.ask(command, *args, timeout=timeout), result, failed,
                     self._urgent_pool if command in URGENT_COMMANDS else None)
        return True

    def eval(self, expr: str, result: Callback, *, stringify: bool = False,
             error: Callback | None = None, quiet: bool = True) -> bool:
        return self.ask('eval', expr, stringify, result=result, error=error, quiet=quiet)

    # ------------------------------------------------------- script commands

    def run_script(self, code: str, name: str = '', result: Callback | None = None,
                   error: Callback | None = None) -> bool:
        """Start *code* at once when the daemon is idle, else queue it.
        *result* gets the request id."""
        conn = self._conn
        if conn is None or not self.is_connected:
            self.commandFailed.emit('queue', 'not connected')
            return False
        idle = self.state.idle and not self.state.requests

        def work() -> str:
            if idle:
                try:
                    return conn.run(code, name, queue=False)
                except DaemonError as err:
                    if 'running' not in str(err):
                        raise
            return conn.run(code, name, queue=True)

        def failed(err: BaseException) -> None:
            self.commandFailed.emit('start' if idle else 'queue', str(err))
            if error is not None:
                error(err)

        self._submit(work, result, failed)
        return True

    def break_script(self, level: int = 2) -> bool:
        return self.ask('break', level)

    def continue_script(self) -> bool:
        return self.ask('continue')

    # The daemon takes a second stop as "escalate to an immediate stop", which cuts
    # the script's cleanup short; a stop this soon after the previous one of the
    # same script is taken for a double click and not sent.
    STOP_REPEAT_GUARD = 1.0

    def stop_script(self, level: int = 2) -> bool:
        now = time.monotonic()
        if now - self._last_stop < self.STOP_REPEAT_GUARD:
            self.commandFailed.emit('stop', 'stop already sent; press Stop again to '
                                    'escalate it to an immediate stop')
            return False
        self._last_stop = now
        return self.ask('stop', level)

    def _forget_last_stop(self, _request: object = None) -> None:
        self._last_stop = float('-inf')

    def emergency(self) -> bool:
        """Emergency stop, sent from a worker of its own: the GUI thread never
        waits.  It never queues behind other requests either: while the
        control connection waits for a reply, NicosClient.emergency() sends
        it on a second connection.  The outcome is reported by
        ``emergencySent`` or ``commandFailed('emergency', reason)``.  False
        when not connected (nothing sent).  While reconnecting it logs in anew
        with the broken connection's saved login: the daemon may well be up."""
        conn = self._conn if self.is_connected else None
        if conn is None and self.can_emergency:
            conn = self._lost
        if conn is None:
            self.commandFailed.emit('emergency', 'not connected')
            return False

        def failed(err: BaseException) -> None:
            self.commandFailed.emit('emergency', str(err) or type(err).__name__)

        self._submit(conn.emergency, self.emergencySent.emit, failed, self._emergency_pool)
        return True

    def update_script(self, code: str, reqid: str | None, reason: str = '',
                      result: Callback | None = None, error: Callback | None = None) -> bool:
        return self.ask('update', code, reason, reqid, result=result, error=error)

    def simulate(self, code: str, name: str = '', error: Callback | None = None) -> bool:
        return self.ask('simulate', name, code, error=error)

    def unqueue(self, reqid: str) -> bool:
        return self.ask('unqueue', reqid)

    def rearrange(self, reqids: list[str]) -> bool:
        return self.ask('rearrange', reqids)

    def add_watch(self, expr: str) -> bool:
        return self.ask('watch', [watch_key(expr)])

    def remove_watch(self, key: str) -> bool:
        self.state.watch.pop(key, None)
        return self.ask('unwatch', [key])

    def history(self, key: str, fromtime: float, totime: float, result: Callback,
                error: Callback | None = None) -> bool:
        return self.ask('gethistory', key, fromtime, totime, result=result, error=error)

    def refresh_devices(self) -> None:
        """Fetch the device list and device descriptions again."""
        conn = self._conn
        if conn is None:
            return

        def work() -> dict[str, Any]:
            status = conn.ask('getstatus')
            return {'devices': status.get('devices', []),
                    'device_info': _device_info(conn)}

        self._submit(work, self._apply_devices, None)

    def poll_devices(self, names: list[str]) -> None:
        """Read status and value of *names* (the daemon publishes them as
        cache events).  For devices that have not been read since the start."""
        conn = self._conn
        if conn is None or (self.user_level or 0) < USER:
            return

        def work() -> None:
            for name in names:
                try:
                    conn.ask('eval', device_poll_expr(name), False)
                except (DaemonError, UnsupportedReply):
                    continue

        self._submit(work)

    # ------------------------------------------------------------ snapshot

    def _apply_snapshot(self, snapshot: dict[str, Any]) -> None:
        status = snapshot.get('status') or {}
        state = DaemonState()
        pair = status.get('status')
        if isinstance(pair, list) and len(pair) == 2:
            state.status, state.lineno = int(pair[0]), int(pair[1])
        state.script = str(status.get('script') or '')
        state.scriptname = str(status.get('scriptname') or '')
        if not state.idle and state.script:
            state.current = {'reqid': None, 'name': state.scriptname or None,
                             'script': state.script}
        state.requests = [r for r in status.get('requests', [])
                          if isinstance(r, dict) and 'script' in r and 'reqid' in r]
        watch = status.get('watch')
        state.watch = dict(watch) if isinstance(watch, dict) else {}
        state.mode = str(status.get('mode') or '')
        state.devices = [str(d) for d in status.get('devices', [])]
        state.device_info = snapshot.get('device_info') or {}
        now = time.time()
        for item in snapshot.get('cache') or []:
            if isinstance(item, list) and len(item) == 2:
                state.cache[str(item[0])] = (now, str(item[1]))
        state.messages = [m for m in snapshot.get('messages') or []
                          if isinstance(m, list) and len(m) >= 6]
        self.state = state

    def _apply_devices(self, data: dict[str, Any]) -> None:
        self.state.devices = [str(d) for d in data.get('devices', [])]
        if data.get('device_info'):
            self.state.device_info = data['device_info']
        self.devicesChanged.emit()

    # --------------------------------------------------------------- events

    def _on_relay_event(self, generation: int, name: str, args: tuple[Any, ...]) -> None:
        if generation != self._generation:
            return  # an old connection
        if name == 'broken':
            if self._held is None:
                self._connection_lost(generation, str(args[0]) if args else 'broken')
            return
        if name == 'disconnected':
            if self._held is None:
                self._connection_lost(generation, 'the daemon closed the connection')
            return
        if name in ('connected', 'error'):
            if name == 'error' and args:
                self.commandFailed.emit('', str(args[0]))
            return
        if self._held is not None:
            self._held.append((name, args))
            return
        self._dispatch(name, args)

    def _dispatch(self, name: str, args: tuple[Any, ...]) -> None:
        data = args[0] if args else None
        handler = getattr(self, f'_ev_{name}', None)
        try:
            if handler is not None:
                handler(data)
        except Exception:
            log.exception('cannot handle %r event %r', name, data)
        self.eventReceived.emit(name, data)

    def _ev_message(self, record: Any) -> None:
        if not (isinstance(record, list) and len(record) >= 6):
            return
        level = record[2]
        if level == ACTION:
            self.state.action = str(record[3]).strip()
            self.actionChanged.emit(self.state.action)
            return
        if isinstance(level, int) and level >= ERROR and record[5]:
            self.state.errors[str(record[5])] = record
            if len(self.state.errors) > 200:
                self.state.errors.pop(next(iter(self.state.errors)))
        self.state.messages.append(record)
        if len(self.state.messages) > 20000:
            del self.state.messages[:5000]
        self.message.emit(record)

    def _ev_simmessage(self, record: Any) -> None:
        if isinstance(record, list) and len(record) >= 6:
            self.simMessage.emit(record)

    def _ev_simresult(self, data: Any) -> None:
        self.simResult.emit(data)

    def _ev_status(self, data: Any) -> None:
        if isinstance(data, list) and len(data) == 2:
            self.state.status, self.state.lineno = int(data[0]), int(data[1])
            if self.state.idle:
                self.state.action = ''
            self.statusChanged.emit(self.state.status, self.state.lineno)

    def _ev_request(self, request: Any) -> None:
        if not isinstance(request, dict) or 'script' not in request:
            return
        if all(r.get('reqid') != request.get('reqid') for r in self.state.requests):
            self.state.requests.append(request)
            self.queueChanged.emit()

    def _ev_processing(self, request: Any) -> None:
        if not isinstance(request, dict):
            return
        reqid = request.get('reqid')
        self.state.requests = [r for r in self.state.requests if r.get('reqid') != reqid]
        self.state.current = request
        self.state.script = str(request.get('script') or '')
        self.state.scriptname = str(request.get('name') or '')
        self.requestStarted.emit(request)
        self.queueChanged.emit()

    def _ev_done(self, request: Any) -> None:
        if not isinstance(request, dict):
            return
        current = self.state.current
        if current is not None and current.get('reqid') in (request.get('reqid'), None):
            self.state.current = None
        finished = self.state.finished
        finished[str(request.get('reqid'))] = request
        while len(finished) > 200:
            finished.pop(next(iter(finished)))
        self.requestDone.emit(request)

    def _ev_blocked(self, reqids: Any) -> None:
        if isinstance(reqids, list):
            removed = set(reqids)
            self.state.requests = [r for r in self.state.requests
                                   if r.get('reqid') not in removed]
            self.queueChanged.emit()

    def _ev_rearranged(self, reqids: Any) -> None:
        if not isinstance(reqids, list):
            return
        order = {reqid: index for index, reqid in enumerate(reqids)}
        self.state.requests.sort(key=lambda r: order.get(r.get('reqid'), len(order)))
        self.queueChanged.emit()

    def _ev_updated(self, request: Any) -> None:
        if not isinstance(request, dict):
            return
        for index, old in enumerate(self.state.requests):
            if old.get('reqid') == request.get('reqid'):
                self.state.requests[index] = request
        self.queueChanged.emit()

    def _ev_watch(self, values: Any) -> None:
        if isinstance(values, dict):
            self.state.watch = {str(k): str(v) for k, v in values.items()}
            self.watchChanged.emit(self.state.watch)

    def _ev_cache(self, data: Any) -> None:
        if not (isinstance(data, list) and len(data) == 4):
            return
        stamp, key, op, value = data
        key = str(key)
        if op == '!' or value == '':
            value = ''
        try:
            stamp = float(stamp)
        except (TypeError, ValueError):
            stamp = time.time()
        self.state.cache[key] = (stamp, str(value))
        self.cacheChanged.emit(key, str(value), stamp)

    def _ev_mode(self, mode: Any) -> None:
        self.state.mode = str(mode)
        self.modeChanged.emit(self.state.mode)

    def _ev_setup(self, _data: Any) -> None:
        self.refresh_devices()

    def _ev_device(self, _data: Any) -> None:
        self.refresh_devices()

    def _ev_dataset(self, data: Any) -> None:
        self.dataset.emit(data)

    def _ev_datapoint(self, data: Any) -> None:
        self.datapoint.emit(data)

    def _ev_datacurve(self, data: Any) -> None:
        self.datacurve.emit(data)

    def _ev_prompt(self, data: Any) -> None:
        self.prompt.emit(data)

    # -------------------------------------------------------------- helpers

    def device_status(self, device: str) -> tuple[int, str] | None:
        entry = self.state.cache.get(f'{device.lower()}/status')
        return parse_status(entry[1]) if entry else None


def _message_key(record: Any) -> tuple[Any, Any] | None:
    if isinstance(record, list) and len(record) > 3:
        return record[1], record[3]
    return None


def _device_info(conn: NicosClient) -> dict[str, Any]:
    if (conn.user_level or 0) < USER:
        return {}  # eval needs level USER
    try:
        info = conn.ask('eval', DEVICE_INFO_EXPR, False)
    except (DaemonError, UnsupportedReply):
        return {}
    return info if isinstance(info, dict) else {}


def _fetch_snapshot(conn: NicosClient) -> dict[str, Any]:
    """Everything the panels need after a login (runs in a worker)."""
    snapshot: dict[str, Any] = {'status': conn.ask('getstatus')}
    try:
        snapshot['messages'] = conn.ask('getmessages', str(MESSAGES_ON_CONNECT))
    except DaemonError:
        snapshot['messages'] = []
    try:
        snapshot['cache'] = conn.ask('getcachekeys', '')
    except DaemonError:
        snapshot['cache'] = []
    snapshot['device_info'] = _device_info(conn)
    return snapshot


__all__ = ['ConnState', 'ConnectionParams', 'DaemonState', 'QtClient', 'device_poll_expr']
