"""Command dispatch for one logged-in connection: one method per protocol command.

Methods are registered with ``@command``, which records the minimum user level, whether
control of the session is needed, the required script state and the argument count and
types. ``CommandHandler.handle`` checks, in this order: known code, decodable payload,
argument count, user level, argument types, control, script state; then it calls the
method. Logins of level GUEST are the view-only ones (the wire has no other notion of
it), so the level table covers them. Every command gets exactly one reply. A method's
docstring is its help text.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nicos.protocols.daemon import (
    ADMIN,
    EMERGENCY_ONLY_COMMANDS,
    GUEST,
    MAX_REPLY_PAYLOAD,
    STATUS_IDLE,
    STATUS_IDLEEXC,
    USER,
    code2command,
    level_names,
)
from nicos.protocols.daemon.codec import CodecError, decode
from nicos.protocols.daemon.framing import encode_reply

from .access import ControlArbiter
from .common import CommandError, User

log = logging.getLogger("nicos_daemon.handler")

MAX_LIST_ITEMS = 10_000
_REPLY_HEADER_BYTES = 5  # start byte and u32 length of an STX/NAK frame
MAX_TRANSFER_BYTES = 16 * 1024 * 1024
_VALID_LEVELS = range(1, 6)  # break/stop levels, §8.2
_LOG_ARG_CHARS = 60


# -- argument types ----------------------------------------------------------------

@dataclass(frozen=True)
class ArgType:
    """A check for one argument: ``convert`` returns the value to pass on (possibly
    normalised, e.g. a numeric string as float) and raises TypeError if it does not fit;
    ``name`` describes the expected type in the refusal."""

    name: str
    convert: Callable[[Any], Any]


def _exact(kind: type, name: str) -> ArgType:
    def convert(value: Any) -> Any:
        if type(value) is not kind:  # no bool for int, no subclasses from JSON anyway
            raise TypeError
        return value
    return ArgType(name, convert)


def _str_list(value: Any) -> list[str]:
    if type(value) is not list or len(value) > MAX_LIST_ITEMS or \
            not all(type(item) is str for item in value):
        raise TypeError
    return value


def _optional_str(value: Any) -> str | None:
    if value is not None and type(value) is not str:
        raise TypeError
    return value


def _message_count(value: Any) -> str | int:
    if type(value) is int and value >= 0:
        return value
    if type(value) is str and (value == "*" or value.isdigit()):
        return value
    raise TypeError


def _time(value: Any) -> float:
    if type(value) in (int, float):
        number = float(value)
    elif type(value) is str:
        try:
            number = float(value)
        except ValueError:
            raise TypeError from None
    else:
        raise TypeError
    if not math.isfinite(number):
        raise TypeError
    return number


def _optional_interval(value: Any) -> float | None:
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise TypeError
    return float(value)


def _dataset_index(value: Any) -> int | str:
    if type(value) is int or value == "*":
        return value
    raise TypeError


def _level(value: Any) -> int:
    if type(value) is not int or value not in _VALID_LEVELS:
        raise TypeError
    return value


def _content(value: Any) -> bytes:
    if type(value) is not bytes or len(value) > MAX_TRANSFER_BYTES:
        raise TypeError
    return value


def _run_count(value: Any) -> int:
    if type(value) is not int or not 1 <= value <= 10_000:
        raise TypeError
    return value


def _anything(value: Any) -> Any:
    return value


STR = _exact(str, "str")
BOOL = _exact(bool, "bool")
STR_LIST = ArgType("list of str", _str_list)
OPT_STR = ArgType("str or null", _optional_str)
COUNT = ArgType("'*' or a number (str or int)", _message_count)
TIME = ArgType("a number or numeric str", _time)
INTERVAL = ArgType("a number or null", _optional_interval)
INDEX = ArgType("int or '*'", _dataset_index)
LEVEL = ArgType("int from 1 to 5", _level)
CONTENT = ArgType(f"bytes (at most {MAX_TRANSFER_BYTES})", _content)
RUN_COUNT = ArgType("int from 1 to 10000", _run_count)
ANY = ArgType("anything", _anything)


# -- the command table ---------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    name: str
    func: Callable[..., Any]
    level: int
    needcontrol: bool
    needscript: bool | None
    minargs: int
    maxargs: int | None  # None: no limit
    params: tuple[tuple[str, ArgType], ...]
    audit: bool  # state-changing: log who did it at INFO

    @property
    def help(self) -> str:
        return " ".join((self.func.__doc__ or "").split())


COMMANDS: dict[str, Command] = {}


def command(name: str, *, level: int, needcontrol: bool = False, needscript: bool | None = None,
            args: tuple[int, int | None] = (0, 0),
            params: Sequence[tuple[str, ArgType]] = (),
            audit: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a handler method for the protocol command ``name``.

    ``needscript``: True = a script must be running, False = none may run, None = any.
    ``params`` names and types the positional arguments (as many as ``args`` allows).
    """
    minargs, maxargs = args

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        if not func.__doc__:
            raise TypeError(f"command {name!r} needs a docstring: it is the help text")
        if maxargs is not None and len(params) != maxargs:
            raise TypeError(f"command {name!r}: give a type for each of {maxargs} arguments")
        if name in COMMANDS:
            raise TypeError(f"command {name!r} registered twice")
        COMMANDS[name] = Command(name, func, level, needcontrol, needscript, minargs,
                                 maxargs, tuple(params), audit)
        return func
    return register


def level_title(level: int) -> str:
    return level_names.get(level, str(level)).upper()


# -- replies -------------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    """One encoded reply; ``close`` asks the server to end the connection after it."""

    ok: bool
    value: Any
    frame: bytes
    close: bool = False


def make_reply(ok: bool, value: Any, close: bool = False) -> Reply:
    """Encode a reply; a result that cannot be encoded, or is larger than clients
    accept, becomes a refusal saying so (the client would otherwise drop the
    connection on the oversize frame without learning why)."""
    try:
        frame = encode_reply(ok, value)
    except CodecError as err:
        log.warning("reply cannot be encoded: %s", err)
        ok, value = False, f"cannot send the result: {err}"
        frame = encode_reply(False, value)
    size = len(frame) - _REPLY_HEADER_BYTES
    if size > MAX_REPLY_PAYLOAD:
        log.warning("reply of %d bytes refused: over the limit of %d", size,
                    MAX_REPLY_PAYLOAD)
        ok, value = False, (f"the result of {size} bytes exceeds the reply limit of "
                            f"{MAX_REPLY_PAYLOAD} bytes")
        frame = encode_reply(False, value)
    return Reply(ok, value, frame, close)


def error_reply(reason: str, close: bool = False) -> Reply:
    return make_reply(False, reason, close)


class _CloseAfter:
    """A handler result meaning: reply with ``value``, then close the connection."""

    def __init__(self, ok: bool, value: Any) -> None:
        self.ok = ok
        self.value = value


# -- what the handler needs from its surroundings ----------------------------------

class Controller(Protocol):
    """The part of ScriptController that commands call (see controller.py)."""

    @property
    def status(self) -> tuple[int, int]: ...
    def queue(self, name: str, code: str, user: User) -> str: ...
    def start(self, name: str, code: str, user: User) -> str: ...
    def unqueue(self, reqid: str, user: User) -> None: ...
    def rearrange(self, ids: list[str]) -> None: ...
    def update(self, code: str, reason: str, reqid: str | None, user: User) -> None: ...
    def break_(self, level: int, user: User) -> None: ...
    def continue_(self, user: User) -> None: ...
    def stop(self, level: int, user: User) -> None: ...
    def finish(self, user: User) -> None: ...
    def emergency(self, user: User) -> None: ...
    def exec_(self, code: str, user: User) -> None: ...
    def eval_(self, expr: str, stringify: bool) -> Any: ...
    def watch(self, exprs: list[str]) -> None: ...
    def unwatch(self, exprs: list[str]) -> None: ...
    def getstatus(self) -> dict: ...
    def getmessages(self, n: str | int) -> list: ...
    def getscript(self) -> str: ...
    def gettrace(self) -> str: ...
    def gethistory(self, key: str, fromtime: Any, totime: Any, interval: Any) -> list: ...
    def getcachekeys(self, query: str) -> list: ...
    def getdataset(self, index: Any) -> Any: ...
    def complete(self, line: str, lastword: str) -> list[str]: ...
    def transfer(self, content: bytes) -> str: ...
    def simulate(self, name: str, code: str, simid: str | None, user: User) -> None: ...


class EventFilter(Protocol):
    def mask(self, names: list[str]) -> None: ...
    def unmask(self, names: list[str]) -> None: ...


def _summary(args: Sequence[Any]) -> str:
    """Arguments shortened for the log: long code is cut, bytes are counted."""
    parts = []
    for arg in args:
        if isinstance(arg, bytes):
            parts.append(f"<{len(arg)} bytes>")
            continue
        text = repr(arg)
        if len(text) > _LOG_ARG_CHARS:
            text = text[:_LOG_ARG_CHARS] + "..."
        parts.append(text)
    return " ".join(parts)


# -- the handler -----------------------------------------------------------------------

class CommandHandler:
    """Executes the commands of one logged-in connection."""

    def __init__(self, controller: Controller, arbiter: ControlArbiter, user: User,
                 events: EventFilter, peer: str = "?", version: str = "") -> None:
        self.controller = controller
        self.arbiter = arbiter
        self.user = user
        self.events = events
        self.peer = peer
        self.version = version
        self.who = f"{user.name}@{peer}"

    def handle(self, code: int, payload: bytes) -> Reply:
        """Execute one command frame and return its single reply."""
        name = code2command.get(code)
        spec = COMMANDS.get(name) if name is not None else None
        if spec is None:
            log.info("%s: unknown command code 0x%04x", self.who, code)
            return error_reply(f"unknown command code 0x{code:04x}")
        if self.user.emergency_only and name not in EMERGENCY_ONLY_COMMANDS:
            return error_reply(f"{name} refused: this login was made for an emergency stop "
                               f"and may only send {', '.join(sorted(EMERGENCY_ONLY_COMMANDS))}")
        try:
            # Raw bytes are only legitimate in transfer; everywhere else they are refused.
            args = decode(payload, allow_transfer_bytes=name == "transfer")
        except CodecError as err:
            log.warning("%s: %s: garbled data, closing: %s", self.who, name, err)
            return error_reply(f"invalid command or garbled data: {err}", close=True)
        if type(args) is not list:
            log.warning("%s: %s: arguments are not an array, closing", self.who, name)
            return error_reply("invalid command or garbled data: the arguments must be "
                               "a JSON array", close=True)
        try:
            converted = self._check(spec, args)
            result = spec.func(self, *converted)
        except CommandError as err:
            reason = str(err)
            log.log(logging.INFO if spec.audit else logging.DEBUG,
                    "%s: %s refused: %s", self.who, name, reason)
            return error_reply(reason)
        except Exception as err:
            log.exception("%s: %s %s failed", self.who, name, _summary(args))
            return error_reply(f"internal error executing command: {type(err).__name__}")
        if spec.audit:
            outcome = f" -> {result}" if isinstance(result, str) else ""
            log.info("%s: %s %s%s", self.who, name, _summary(args), outcome)
        if isinstance(result, _CloseAfter):
            return make_reply(result.ok, result.value, close=True)
        return make_reply(True, result)

    def _check(self, spec: Command, args: list[Any]) -> list[Any]:
        count = len(args)
        if count < spec.minargs or (spec.maxargs is not None and count > spec.maxargs):
            raise CommandError("invalid number of arguments")
        if self.user.level < spec.level:
            raise CommandError(f"{spec.name} needs user level {level_title(spec.level)}")
        converted = []
        for value, (param, kind) in zip(args, spec.params, strict=False):
            try:
                converted.append(kind.convert(value))
            except TypeError:
                raise CommandError(f"wrong argument type for {param}: expected "
                                   f"{kind.name}") from None
        if spec.needcontrol:
            self.arbiter.check(self.user)
        if spec.needscript is not None:
            idle = self.controller.status[0] in (STATUS_IDLE, STATUS_IDLEEXC)
            if spec.needscript and idle:
                raise CommandError("no script is running")
            if not spec.needscript and not idle:
                raise CommandError("a script is running")
        if spec.maxargs is None:
            converted.extend(args[len(converted):])
        return converted

    # -- script control ----------------------------------------------------------------

    @command("start", level=USER, needcontrol=True, needscript=False, args=(2, 2),
             params=[("name", STR), ("code", STR)], audit=True)
    def start(self, name: str, code: str) -> str:
        """Run a script at once if nothing runs; returns its request id.
        Arguments: name ("" for none), code."""
        reqid = self.controller.start(name, code, self.user)
        self.arbiter.take(self.user)
        return reqid

    @command("simulate", level=USER, args=(2, 3),
             params=[("name", STR), ("code", STR), ("simid", OPT_STR)], audit=True)
    def simulate(self, name: str, code: str, simid: str | None = None) -> None:
        """Dry-run a script; results arrive as simmessage/simresult events.
        Arguments: name, code, optional simulation id."""
        self.controller.simulate(name, code, simid, self.user)

    @command("queue", level=USER, needcontrol=True, args=(2, 2),
             params=[("name", STR), ("code", STR)], audit=True)
    def queue(self, name: str, code: str) -> str:
        """Append a script to the queue; returns its request id.
        Arguments: name ("" for none), code."""
        reqid = self.controller.queue(name, code, self.user)
        self.arbiter.take(self.user)
        return reqid

    @command("unqueue", level=USER, needcontrol=True, args=(1, 1), params=[("reqid", STR)],
             audit=True)
    def unqueue(self, reqid: str) -> None:
        """Remove a queued script by request id, or all with "*"."""
        self.controller.unqueue(reqid, self.user)

    @command("rearrange", level=USER, needcontrol=True, args=(1, 1),
             params=[("ids", STR_LIST)], audit=True)
    def rearrange(self, ids: list[str]) -> None:
        """Reorder the queue; the argument lists the queued request ids in the new order."""
        self.controller.rearrange(ids)

    @command("update", level=USER, needcontrol=True, needscript=True, args=(2, 3),
             params=[("code", STR), ("reason", STR), ("reqid", OPT_STR)], audit=True)
    def update(self, code: str, reason: str, reqid: str | None = None) -> None:
        """Replace the text of the running script (or of a queued one given its request
        id); the part already executed must not change. Arguments: code, reason, reqid."""
        self.controller.update(code, reason, reqid, self.user)

    @command("break", level=USER, needcontrol=True, needscript=True, args=(1, 1),
             params=[("level", LEVEL)], audit=True)
    def break_(self, level: int) -> None:
        """Pause the running script at the next breakpoint of the given level (1-5)."""
        self.controller.break_(level, self.user)

    @command("continue", level=USER, needcontrol=True, needscript=True, audit=True)
    def continue_(self) -> None:
        """Resume a paused script."""
        self.controller.continue_(self.user)

    @command("stop", level=USER, needcontrol=True, needscript=True, args=(1, 1),
             params=[("level", LEVEL)], audit=True)
    def stop(self, level: int) -> None:
        """Stop the running script at the next breakpoint of the given level (1-5) and
        drop the queued scripts."""
        self.controller.stop(level, self.user)

    @command("emergency", level=GUEST, audit=True)
    def emergency(self) -> None:
        """Emergency stop: drop the queue, stop the script at once and stop all devices.
        Allowed to everybody, in every state."""
        self.controller.emergency(self.user)

    @command("finish", level=USER, needcontrol=True, needscript=True, audit=True)
    def finish(self) -> None:
        """End the current count early, keeping its data; the script goes on."""
        self.controller.finish(self.user)

    # -- code evaluation ------------------------------------------------------------

    @command("exec", level=USER, needcontrol=True, args=(1, 1), params=[("code", STR)],
             audit=True)
    def exec_(self, code: str) -> None:
        """Run code in the script namespace now, beside any running script; replies
        when it has finished."""
        self.controller.exec_(code, self.user)

    @command("eval", level=USER, args=(2, 2), params=[("expr", STR), ("stringify", BOOL)])
    def eval_(self, expr: str, stringify: bool) -> Any:
        """Evaluate an expression in the script namespace and return its value (its
        repr with stringify true)."""
        log.debug("%s: eval %r", self.who, expr[:200])
        return self.controller.eval_(expr, stringify)

    @command("watch", level=USER, needcontrol=True, args=(1, 1), params=[("exprs", STR_LIST)],
             audit=True)
    def watch(self, exprs: list[str]) -> None:
        """Add watch expressions ("expr" or "expr:group"); their values arrive as
        watch events."""
        self.controller.watch(exprs)

    @command("unwatch", level=USER, needcontrol=True, args=(1, 1),
             params=[("exprs", STR_LIST)], audit=True)
    def unwatch(self, exprs: list[str]) -> None:
        """Remove watch expressions; "*:group" removes a whole group."""
        self.controller.unwatch(exprs)

    # -- queries ---------------------------------------------------------------------

    @command("getversion", level=GUEST)
    def getversion(self) -> str:
        """The daemon's version."""
        return self.version

    @command("getstatus", level=GUEST)
    def getstatus(self) -> dict:
        """Snapshot of the daemon state: status, script, queue, watch values, mode."""
        return self.controller.getstatus()

    @command("getmessages", level=GUEST, args=(1, 1), params=[("n", COUNT)])
    def getmessages(self, n: str | int) -> list:
        """The last n message records; "*" or 0 for all that are kept."""
        return self.controller.getmessages(n)

    @command("getscript", level=GUEST)
    def getscript(self) -> str:
        """Text of the running script, or an empty string."""
        return self.controller.getscript()

    @command("gethistory", level=GUEST, args=(3, 4),
             params=[("key", STR), ("fromtime", TIME), ("totime", TIME),
                     ("interval", INTERVAL)])
    def gethistory(self, key: str, fromtime: float, totime: float,
                   interval: float | None = None) -> list:
        """Value history of a cache key ("device/parameter") between two Unix times,
        optionally thinned to one value per interval."""
        return self.controller.gethistory(key, fromtime, totime, interval)

    @command("getcachekeys", level=GUEST, args=(1, 1), params=[("query", STR)])
    def getcachekeys(self, query: str) -> list:
        """Current [key, value] pairs for a key prefix, or for a comma-separated list
        of exact keys."""
        return self.controller.getcachekeys(query)

    @command("gettrace", level=ADMIN)
    def gettrace(self) -> str:
        """Stack trace of the running script."""
        return self.controller.gettrace()

    @command("getdataset", level=GUEST, args=(1, 1), params=[("index", INDEX)])
    def getdataset(self, index: int | str) -> Any:
        """Scan data by index, or all with "*"."""
        return self.controller.getdataset(index)

    @command("history", level=GUEST, args=(0, 1), params=[("limit", RUN_COUNT)])
    def history(self, limit: int = 100) -> list[dict]:
        """Past runs, newest first (id, user, script, submit/start/end time, outcome,
        error); kept across daemon restarts.  An extension of protocol 24."""
        return self.controller.history(limit)

    # -- miscellaneous ---------------------------------------------------------------

    @command("complete", level=GUEST, args=(2, 2), params=[("line", STR), ("lastword", STR)])
    def complete(self, line: str, lastword: str) -> list[str]:
        """Completions for the last word of a command line."""
        return self.controller.complete(line, lastword)

    @command("transfer", level=USER, args=(1, 1), params=[("content", CONTENT)], audit=True)
    def transfer(self, content: bytes) -> str:
        """Store raw bytes in a new file on the daemon side; returns its path."""
        return self.controller.transfer(content)

    @command("debug", level=ADMIN, args=(0, 1), params=[("code", ANY)])
    def debug(self, code: Any = None) -> None:
        """Remote debugging of scripts; not supported by this daemon."""
        raise CommandError("remote debugging is not supported")

    @command("debuginput", level=ADMIN, args=(0, 1), params=[("line", ANY)])
    def debuginput(self, line: Any = None) -> None:
        """Input for the remote debugger; not supported by this daemon."""
        raise CommandError("remote debugging is not supported")

    # -- connection management ---------------------------------------------------------

    @command("eventmask", level=GUEST, args=(1, 1), params=[("names", STR_LIST)])
    def eventmask(self, names: list[str]) -> None:
        """Stop sending the named events to this client (unknown names are ignored)."""
        self.events.mask(names)

    @command("eventunmask", level=GUEST, args=(1, 1), params=[("names", STR_LIST)])
    def eventunmask(self, names: list[str]) -> None:
        """Send the named events to this client again."""
        self.events.unmask(names)

    @command("unlock", level=USER, audit=True)
    def unlock(self) -> None:
        """Release control of the session; allowed to the holder and to admins."""
        self.arbiter.unlock(self.user)

    @command("quit", level=GUEST)
    def quit(self) -> _CloseAfter:
        """Log out: the daemon replies and closes both connections. Releases control
        if this login holds it. A running script goes on."""
        self.arbiter.release_if_holder(self.user)
        log.info("%s: quit", self.who)
        return _CloseAfter(True, None)

    @command("authenticate", level=GUEST, args=(0, None))
    def authenticate(self, *args: Any) -> _CloseAfter:
        """Log in; only valid as the first command of a connection."""
        log.warning("%s: authenticate after login, closing", self.who)
        return _CloseAfter(False, "already logged in")

    @command("keepalive", level=GUEST)
    def keepalive(self) -> None:
        """Do nothing; keeps idle connections alive through firewalls."""


def command_help() -> dict[str, str]:
    """Help text of every command, by name (from the handler docstrings)."""
    return {name: spec.help for name, spec in sorted(COMMANDS.items())}
