"""One simulation: a dry-run session on the same setups, and the script.

The session loads the setups the instrument has loaded (quietly: their
messages were seen when the instrument loaded them), then takes over the
instrument's state from the request (settable parameters such as limits,
offsets and speeds, and where each moveable device is).  The script is
checked for undefined names, then run on virtual time.  The result: did it
run through, how long it would take, and the range each moved device would
cover.  Messages go to the "nicos" logger, as in a real run.
"""

from __future__ import annotations

import ast
import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nicos.core.clock import ManualClock
from nicos.core.dryrun import DryRun
from nicos.core.readable import Moveable
from nicos.core.session import Session
from nicos.simulation.hooks import SimulationHooks
from nicos.simulation.names import undefined_names

user_log = logging.getLogger("nicos")

SCRIPT_FILENAME = "<script>"


@dataclass
class SimulationResult:
    ok: bool
    duration: float = 0.0
    # device -> [last, lowest, highest, aliases], values formatted with unit
    devinfo: dict[str, list[Any]] = field(default_factory=dict)


@contextmanager
def _quiet() -> Iterator[None]:
    logger = logging.getLogger("nicos")
    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before


def apply_snapshot(session: Session, devices: dict[str, Any]) -> None:
    """Give the dry-run devices the instrument's parameters and positions."""
    assert session.dry_run is not None
    for name, params in devices.items():
        device = session.devices.get(name)
        if device is None or not isinstance(params, dict):
            continue
        for pname, value in params.items():
            if pname == "value":
                if isinstance(device, Moveable):
                    session.dry_run.preset_value(name, value)
                continue
            param = type(device).all_parameters.get(pname)
            if param is None or not param.settable:
                continue
            try:
                device._params[pname] = param.kind.convert(value)
            except Exception:  # noqa: BLE001, S112 - keep the setup's value
                continue


def _script_traceback(err: BaseException) -> tuple[int | None, str]:
    """The script line where ``err`` happened and the traceback from the
    script's first frame on (the simulation's own frames left out)."""
    if isinstance(err, SyntaxError):
        line = err.lineno if err.filename == SCRIPT_FILENAME else None
        return line, "".join(traceback.format_exception_only(type(err), err))
    tb = err.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != SCRIPT_FILENAME:
        tb = tb.tb_next
    lines = [frame.lineno for frame in traceback.extract_tb(tb)
             if frame.filename == SCRIPT_FILENAME]
    text = "".join(traceback.format_exception(type(err), err, tb or err.__traceback__))
    return (lines[-1] if lines else None), text


def _report_error(err: BaseException) -> None:
    line, trace = _script_traceback(err)
    where = f"line {line}: " if line is not None else ""
    what = err.msg if isinstance(err, SyntaxError) else str(err)
    summary = f"{type(err).__name__} - {what}" if what else type(err).__name__
    record = user_log.makeRecord(user_log.name, logging.ERROR, __file__, 0, "%s%s",
                                 (where, summary), None)
    record.exc_text = trace
    user_log.handle(record)


def _warn_undefined(tree: ast.AST, session: Session) -> None:
    for name, line, close in undefined_names(tree, session.namespace):
        hint = f" (did you mean '{close}'?)" if close else ""
        user_log.warning("line %d: name '%s' is not defined%s", line, name, hint)


def _devinfo(session: Session) -> dict[str, list[Any]]:
    assert session.dry_run is not None
    info = {}
    for name, (last, low, high) in session.dry_run.ranges().items():
        device = session.devices.get(name)
        if device is None:
            continue
        info[name] = [device.format(last, unit=True), device.format(low, unit=True),
                      device.format(high, unit=True), []]
    return info


def _load(request: dict[str, Any], clock: ManualClock) -> Session:
    session = Session(setup_paths=[Path(p) for p in request["setup_paths"]],
                      hooks=SimulationHooks(clock), clock=clock, dry_run=True)
    try:
        with _quiet():
            if request["setups"]:
                session.load_setup(*request["setups"])
    except BaseException:
        session.shutdown()
        raise
    session.dry_run = DryRun(session)  # forget what the setups' startup code did
    apply_snapshot(session, request["devices"])
    return session


def run_simulation(request: dict[str, Any]) -> SimulationResult:
    """Simulate ``request['code']`` (see wire.py for the request)."""
    clock = ManualClock()
    try:
        session = _load(request, clock)
    except Exception as err:  # noqa: BLE001 - reported as the simulation's error
        user_log.error("the setups could not be loaded for the simulation: %s", err)
        return SimulationResult(ok=False)
    try:
        try:
            tree = compile(request["code"], SCRIPT_FILENAME, "exec", ast.PyCF_ONLY_AST)
            _warn_undefined(tree, session)
            code = compile(tree, SCRIPT_FILENAME, "exec")
        except SyntaxError as err:
            _report_error(err)
            return SimulationResult(ok=False)
        started = clock.time()
        try:
            exec(code, session.namespace)
        except BaseException as err:  # noqa: BLE001 - the script may raise anything
            _report_error(err)
            return SimulationResult(ok=False, duration=clock.time() - started,
                                    devinfo=_devinfo(session))
        return SimulationResult(ok=True, duration=clock.time() - started,
                                devinfo=_devinfo(session))
    finally:
        with _quiet():
            session.shutdown()


__all__ = ["SimulationResult", "apply_snapshot", "run_simulation"]
