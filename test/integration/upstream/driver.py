"""Drive the unchanged upstream NICOS client with JSON lines (stdin -> stdout).

Run with the upstream venv's interpreter and the upstream tree on PYTHONPATH
(see fetch.py: ``UpstreamEnv.driver_command()`` and ``UpstreamEnv.env()``)::

    python driver.py HOST PORT USER PASSWORD

Then write one JSON object per line to stdin; exactly one JSON object per line
comes back on stdout for each (flushed), in order.  Every reply has ``ok``
(bool) and echoes ``op`` and, if given, ``id``.  Failures are replies with
``ok: false`` and ``error`` (text); nothing is left to hang: each operation is
bounded by its ``timeout`` (seconds, default 30).  The protocol is described in
README.md next to this file.

This file must not import anything from our repository: it runs against the
upstream ``nicos`` package only.
"""

from __future__ import annotations

import base64
import importlib
import json
import math
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

# Imported by name at run time: this must resolve to the upstream tree on
# PYTHONPATH (our own ``nicos`` package is a different one).
try:
    nicos = importlib.import_module("nicos")
    ConnectionData = importlib.import_module("nicos.clients.base").ConnectionData
    NicosClient = importlib.import_module("nicos.clients.base").NicosClient
    ClientTransport = importlib.import_module("nicos.clients.proto.classic").ClientTransport
    DAEMON_EVENTS = importlib.import_module("nicos.protocols.daemon").DAEMON_EVENTS
except Exception as _import_error:  # reported as a reply to every command
    IMPORT_ERROR: str | None = f"cannot import the upstream client: {_import_error!r}"
    NicosClient = object  # type: ignore[assignment,misc]
    DAEMON_EVENTS = {}
else:
    IMPORT_ERROR = None

DEFAULT_TIMEOUT = 40.0  # above the upstream client's own 30 s socket timeout
CLIENT_SIGNALS = ("connected", "failed", "error", "broken", "disconnected")
_MISSING = object()


# -- conversion of upstream objects to JSON --------------------------------------


def jsonable(obj: Any) -> Any:
    """Turn what the upstream client hands us into plain JSON values.

    tuples -> lists; bytes -> {"__bytes__": base64}; exceptions ->
    {"__exception__": class name, "module", "args", "str"}; non-finite floats
    -> {"__float__": "nan"|"inf"|"-inf"}; anything else unknown ->
    {"__repr__": repr, "__type__": qualified class name}.
    """
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return {"__float__": "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")}
    if isinstance(obj, list | tuple):
        return [jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"__bytes__": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, BaseException):
        return {
            "__exception__": type(obj).__name__,
            "module": type(obj).__module__,
            "args": jsonable(list(obj.args)),
            "str": str(obj),
        }
    tobytes = getattr(obj, "tobytes", None)  # numpy arrays (event blobs)
    if callable(tobytes) and hasattr(obj, "dtype"):
        try:
            if obj.dtype.kind == "S":
                return {"__bytes__": base64.b64encode(tobytes()).decode("ascii")}
            return jsonable(obj.tolist())
        except Exception:
            pass
    if isinstance(obj, set | frozenset):
        return [jsonable(x) for x in sorted(obj, key=repr)]
    return {"__repr__": repr(obj), "__type__": f"{type(obj).__module__}.{type(obj).__qualname__}"}


# -- matching of event payloads ----------------------------------------------------


def matches(pattern: Any, value: Any) -> bool:
    """Subset match of a JSON *pattern* against a (jsonable) *value*.

    - dict pattern vs dict value: every key present and matching;
    - dict pattern vs list value: keys are indices ("0", "-1", ...);
    - list pattern vs list value: same length, element-wise;
    - {"$contains": s}: s is a substring of the string value;
    - {"$re": r}: re.search(r, value) on a string value;
    - {"$in": [...]}: value equals one of the items;
    - {"$any": true}: anything (also a missing key is not allowed);
    - anything else: equality (1 == 1.0, but True != 1).
    """
    if isinstance(pattern, dict):
        if len(pattern) == 1:
            ((op, arg),) = pattern.items()
            if op == "$contains":
                return isinstance(value, str) and str(arg) in value
            if op == "$re":
                return isinstance(value, str) and re.search(str(arg), value) is not None
            if op == "$in":
                return any(matches(item, value) for item in arg)
            if op == "$any":
                return True
        if isinstance(value, dict):
            return all(k in value and matches(v, value[k]) for k, v in pattern.items())
        if isinstance(value, list):
            for k, v in pattern.items():
                try:
                    idx = int(k)
                    item = value[idx]
                except (ValueError, IndexError):
                    return False
                if not matches(v, item):
                    return False
            return True
        return False
    if isinstance(pattern, list):
        return (
            isinstance(value, list)
            and len(value) == len(pattern)
            and all(matches(p, v) for p, v in zip(pattern, value, strict=True))
        )
    if isinstance(pattern, bool) or isinstance(value, bool):
        return type(pattern) is type(value) and pattern == value
    return bool(pattern == value)


# -- optional capture of the raw payload bytes -----------------------------------


def _raw_text(data: bytes | bytearray | memoryview) -> Any:
    raw = bytes(data)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # classic (pickle) serializer
        return {"__bytes__": base64.b64encode(raw).decode("ascii")}


class TapSerializer:
    """Wraps the serializer the upstream transport picked; remembers raw payloads."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.last_event_raw: Any = None
        self.replies_raw: list[Any] = []  # non-ACK replies since last taken

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def deserialize_event(self, data: Any, evtname: Any = None) -> Any:
        self.last_event_raw = _raw_text(data)
        return self.inner.deserialize_event(data, evtname)

    def deserialize_reply(self, data: Any, success: Any = None) -> Any:
        self.replies_raw.append(_raw_text(data))
        return self.inner.deserialize_reply(data, success)


if IMPORT_ERROR is None:

    class TapTransport(ClientTransport):  # type: ignore[misc,valid-type]
        """Upstream transport whose serializer records raw payloads."""

        def determine_serializer(self, data: Any, ok: Any) -> Any:
            return TapSerializer(super().determine_serializer(data, ok))


# -- the recording client ----------------------------------------------------------


class RecordingClient(NicosClient):  # type: ignore[misc,valid-type]
    """The upstream NicosClient, with every signal kept in an ordered log."""

    def __init__(self) -> None:
        super().__init__(self._log_func)
        self.cond = threading.Condition()
        self.events: list[dict[str, Any]] = []
        self.cursor = 0  # wait_event continues after the last event it returned
        self.raw = False  # attach raw payload text to events and replies
        self.client_log: list[str] = []
        self._local = threading.local()

    def _log_func(self, msg: str) -> None:
        self.client_log.append(str(msg))
        print(f"[upstream client] {msg}", file=sys.stderr, flush=True)

    def signal(self, name: str, *args: Any) -> None:
        captured = getattr(self._local, "captured", None)
        if captured is not None and name in ("error", "broken", "failed"):
            captured.append((name, args))
        record: dict[str, Any] = {
            "name": name,
            "data": jsonable(args[0]) if args else None,
            "t": time.time(),
        }
        if name not in DAEMON_EVENTS:
            record["client"] = True  # a client-side signal, not a daemon event
            if len(args) > 1:
                record["extra"] = jsonable(list(args[1:]))
        else:
            if len(args) > 1:  # blobs (livedata)
                record["blobs"] = jsonable(list(args[1]))
            tap = getattr(self.transport, "serializer", None)
            if self.raw and isinstance(tap, TapSerializer):
                record["raw"] = tap.last_event_raw
        with self.cond:
            record["seq"] = len(self.events)
            self.events.append(record)
            self.cond.notify_all()

    def take_raw_replies(self) -> list[Any]:
        """Raw payloads of the replies (not bare ACKs) received since last taken."""
        tap = getattr(self.transport, "serializer", None)
        if not isinstance(tap, TapSerializer):
            return []
        taken, tap.replies_raw = tap.replies_raw, []
        return taken

    def capture(self) -> list[tuple[str, tuple[Any, ...]]]:
        """Start collecting error signals raised in the calling thread."""
        captured: list[tuple[str, tuple[Any, ...]]] = []
        self._local.captured = captured
        return captured

    def release(self) -> None:
        self._local.captured = None


def _failure(captured: list[tuple[str, tuple[Any, ...]]]) -> dict[str, Any] | None:
    """Reply for the first error signal raised during a call, if any."""
    if not captured:
        return None
    name, args = captured[0]
    msg = str(args[0]) if args else name
    reply: dict[str, Any] = {"ok": False, "error": msg, "signal": name}
    prefix = "Error from daemon: "
    if name == "error" and msg.startswith(prefix):
        # a NAK reply; upstream formats it as "Error from daemon: <reason>."
        reason = msg[len(prefix) :]
        reply["nak"] = reason[:-1] if reason.endswith(".") else reason
    if name in ("broken", "failed"):
        reply["broken"] = True
    return reply


class DriverError(Exception):
    """A failure reported as a plain error text (no traceback)."""


class Driver:
    """Executes one JSON command at a time against a RecordingClient."""

    def __init__(self, host: str, port: int, user: str, password: str) -> None:
        self.host, self.port, self.user, self.password = host, port, user, password
        self.client: RecordingClient | None = None
        self.ops: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "hello": self.op_hello,
            "connect": self.op_connect,
            "ask": self.op_ask,
            "tell": self.op_tell,
            "eval": self.op_eval,
            "run": self.op_run,
            "wait_event": self.op_wait_event,
            "events": self.op_events,
            "mark": self.op_mark,
            "status": self.op_status,
            "disconnect": self.op_disconnect,
        }

    # helpers

    def _client(self) -> RecordingClient:
        if self.client is None:
            self.client = RecordingClient()
        return self.client

    def _connected(self) -> RecordingClient:
        client = self._client()
        if not client.isconnected:
            raise DriverError("not connected")
        return client

    def _call(self, fn: Callable[[], Any]) -> dict[str, Any]:
        client = self._connected()
        captured = client.capture()
        try:
            result = fn()
        finally:
            client.release()
        failure = _failure(captured)
        reply = failure if failure is not None else {"ok": True, "result": result}
        if client.raw:
            reply["raw"] = client.take_raw_replies()
        return reply

    # operations

    def op_hello(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "nicos_version": getattr(nicos, "nicos_version", None),
            "client_module": sys.modules[NicosClient.__module__].__file__,
            "python": sys.version.split()[0],
            "pid": os.getpid(),
        }

    def op_connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        client = self._client()
        if client.isconnected:
            return {"ok": False, "error": "already connected"}
        # a fresh transport per connection: upstream keeps the serializer it
        # detected from the first banner for the transport's lifetime
        raw = bool(cmd.get("raw", False))
        client.transport = TapTransport() if raw else ClientTransport()
        client.raw = raw
        conn = ConnectionData(
            cmd.get("host", self.host),
            int(cmd.get("port", self.port)),
            cmd.get("user", self.user),
            cmd.get("password", self.password),
            viewonly=bool(cmd.get("viewonly", False)),
        )
        captured = client.capture()
        try:
            client.connect(conn, eventmask=cmd.get("eventmask"))
        finally:
            client.release()
        if client.isconnected and not captured:
            transport = client.transport
            serializer = getattr(getattr(transport, "serializer", None), "name", None)
            reply = {
                "ok": True,
                "user_level": client.user_level,
                "banner": jsonable(getattr(client, "daemon_info", None)),
                "serializer": serializer,
                "compat_proto": client.compat_proto,
            }
            if raw:
                reply["raw"] = client.take_raw_replies()
            return reply
        failure = _failure(captured) or {"ok": False, "error": "connect failed"}
        if raw:
            failure["raw"] = client.take_raw_replies()
        if client.isconnected:  # e.g. the event connection failed after login
            client.disconnect()
        return failure

    def op_ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        command = cmd["command"]
        args = list(cmd.get("args", []))
        client = self._connected()
        reply = self._call(lambda: client.ask(command, *args))
        if reply["ok"]:
            reply["result"] = jsonable(reply["result"])
        return reply

    def op_tell(self, cmd: dict[str, Any]) -> dict[str, Any]:
        command = cmd["command"]
        args = list(cmd.get("args", []))
        client = self._connected()
        reply = self._call(lambda: client.tell(command, *args))
        if reply["ok"]:
            reply["result"] = jsonable(reply["result"])
        return reply

    def op_eval(self, cmd: dict[str, Any]) -> dict[str, Any]:
        expr = cmd["expr"]
        stringify = bool(cmd.get("stringify", False))
        default = cmd.get("default", _MISSING)
        client = self._connected()

        def call() -> Any:
            if default is _MISSING:
                try:
                    return ("value", client.eval(expr, stringify=stringify))
                except BaseException as exc:  # the daemon's exception object, re-raised
                    return ("exception", exc)
            return ("value", client.eval(expr, default, stringify=stringify))

        reply = self._call(call)
        if not reply["ok"]:
            return reply
        kind, value = reply.pop("result")
        if kind == "exception":
            reply.update(
                ok=False, error=f"{type(value).__name__}: {value}", exception=jsonable(value)
            )
        elif value is Ellipsis:
            # upstream's "no default" marker came back: the reply was lost
            reply.update(ok=False, error="no result (client returned its default marker)")
        else:
            reply["result"] = jsonable(value)
        return reply

    def op_run(self, cmd: dict[str, Any]) -> dict[str, Any]:
        code = cmd["code"]
        name = cmd.get("name")
        client = self._connected()
        if cmd.get("noqueue", False):
            # client.run(noqueue=True) asks with noerror=True and so hides the
            # daemon's reason for a refusal; ask "start" directly instead
            reply = self._call(lambda: client.ask("start", name or "", code))
            if reply["ok"] and reply["result"] is not None:
                client.last_reqid = reply["result"]
        else:
            reply = self._call(lambda: client.run(code, name))
        if reply["ok"]:
            reqid = reply.pop("result")
            if reqid is None:
                reply.update(ok=False, error="no request id returned")
            else:
                reply["reqid"] = jsonable(reqid)
        return reply

    def op_wait_event(self, cmd: dict[str, Any]) -> dict[str, Any]:
        client = self._client()
        names = cmd.get("names") or [cmd["name"]]
        pattern = cmd.get("match", _MISSING)
        timeout = float(cmd.get("timeout", 10.0))
        deadline = time.monotonic() + timeout
        with client.cond:
            start = cmd.get("since", client.cursor)
            idx = max(0, int(start))
            while True:
                while idx < len(client.events):
                    ev = client.events[idx]
                    idx += 1
                    if ev["name"] in names and (
                        pattern is _MISSING or matches(pattern, ev["data"])
                    ):
                        client.cursor = idx
                        return {"ok": True, "event": ev}
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return {
                        "ok": False,
                        "error": f"timeout waiting for {names}",
                        "timeout": True,
                        "seq": len(client.events),
                    }
                client.cond.wait(remaining)

    def op_events(self, cmd: dict[str, Any]) -> dict[str, Any]:
        client = self._client()
        names = cmd.get("names")
        since = int(cmd.get("since", 0))
        with client.cond:
            evs = [ev for ev in client.events[since:] if names is None or ev["name"] in names]
            return {"ok": True, "events": evs, "seq": len(client.events)}

    def op_mark(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Current log position; with "move": true also moves the wait cursor there."""
        client = self._client()
        with client.cond:
            seq = len(client.events)
            if cmd.get("move", True):
                client.cursor = seq
            return {"ok": True, "seq": seq}

    def op_status(self, cmd: dict[str, Any]) -> dict[str, Any]:
        client = self._client()
        return {
            "ok": True,
            "connected": bool(client.isconnected),
            "user_level": client.user_level,
            "events": len(client.events),
            "cursor": client.cursor,
        }

    def op_disconnect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        client = self._client()
        if client.isconnected:
            client.disconnect()
        return {"ok": True}

    # dispatch

    def execute(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd.get("op")
        if IMPORT_ERROR is not None:
            return {"ok": False, "error": IMPORT_ERROR}
        fn = self.ops.get(op) if isinstance(op, str) else None
        if fn is None:
            return {"ok": False, "error": f"unknown op {op!r}"}
        # wait_event has its own deadline; give it a little slack here
        timeout = float(cmd.get("timeout", DEFAULT_TIMEOUT))
        if op == "wait_event":
            timeout += 5.0
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["reply"] = fn(cmd)
            except DriverError as err:
                box["reply"] = {"ok": False, "error": str(err)}
            except KeyError as err:
                box["reply"] = {"ok": False, "error": f"missing field {err}"}
            except Exception as err:
                box["reply"] = {
                    "ok": False,
                    "error": f"{type(err).__name__}: {err}",
                    "traceback": traceback.format_exc(),
                }

        worker = threading.Thread(target=work, name=f"op {op}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            return {
                "ok": False,
                "error": f"operation {op!r} timed out after {timeout:g} s",
                "timeout": True,
            }
        return box["reply"]

    def shutdown(self) -> None:
        client = self.client
        if client is not None and client.isconnected:
            done = threading.Event()

            def bye() -> None:
                try:
                    client.disconnect()
                finally:
                    done.set()

            threading.Thread(target=bye, daemon=True).start()
            done.wait(5.0)


def _write(out: Any, reply: dict[str, Any]) -> None:
    try:
        line = json.dumps(reply, allow_nan=False)
    except (TypeError, ValueError) as err:
        line = json.dumps(
            {
                "ok": False,
                "error": f"unserializable reply: {err}",
                "op": reply.get("op"),
                "id": reply.get("id"),
            }
        )
    out.write(line + "\n")
    out.flush()


def main(argv: list[str]) -> int:
    """Read JSON commands from stdin until EOF or "quit"; answer each on stdout."""
    if len(argv) != 5:
        print("usage: driver.py HOST PORT USER PASSWORD", file=sys.stderr)
        return 2
    out = sys.stdout
    # anything the upstream code prints must not garble the protocol stream
    sys.stdout = sys.stderr
    driver = Driver(argv[1], int(argv[2]), argv[3], argv[4])
    for raw in sys.stdin:
        raw = raw.strip()
        if not raw:
            continue
        try:
            cmd = json.loads(raw)
            if not isinstance(cmd, dict):
                raise ValueError("command must be a JSON object")
        except ValueError as err:
            _write(out, {"ok": False, "error": f"bad command line: {err}"})
            continue
        if cmd.get("op") == "quit":
            driver.shutdown()
            _write(out, {"ok": True, "op": "quit", **({"id": cmd["id"]} if "id" in cmd else {})})
            break
        reply = driver.execute(cmd)
        reply["op"] = cmd.get("op")
        if "id" in cmd:
            reply["id"] = cmd["id"]
        _write(out, reply)
    else:
        driver.shutdown()
    out.flush()
    # client threads are daemons, but a socket stuck in a call must not keep us
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
