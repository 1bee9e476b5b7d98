"""Connects the instrument session (nicos.core) to the script controller.

The session only knows the DaemonHooks interface; this adapter implements it
on the controller.  ``start_instrument`` creates the session (scan files in
the configured data directory), the value history next to them, the
simulation runner, and loads the configured setup; ``ScriptController.shutdown``
ends the latter two at daemon shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from nicos.core.errors import ConfigurationError
from nicos.core.hooks import DaemonHooks
from nicos.core.session import Session
from nicos.protocols.daemon import BREAK_AFTER_STEP, ERROR
from nicos_daemon.controller import ScriptController
from nicos_daemon.history import open_history
from nicos_daemon.simulation import Simulations
from nicos_daemon.sleeping import wait_at_level

log = logging.getLogger("nicos_daemon.instrument")


class ControllerHooks(DaemonHooks):
    """The daemon side of the session's hooks."""

    def __init__(self, controller: ScriptController) -> None:
        self._controller = controller

    def emit(self, event: str, data: Any) -> None:
        self._controller.bus.emit(event, data)

    def breakpoint(self, level: int) -> None:
        self._controller.breakpoint(level)

    def sleep(self, seconds: float) -> None:
        self._controller.sleep(seconds)

    def sleep_at_level(self, seconds: float, level: int) -> None:
        controller = self._controller
        if level <= BREAK_AFTER_STEP or not controller.in_script_thread():
            controller.sleep(seconds)
            return
        wait_at_level(controller.ctl, float(seconds), level)

    def register_emergency_stop(self, func: Callable[[], None]) -> None:
        self._controller.register_emergency_stop(func)

    def consume_finish_request(self) -> bool:
        return self._controller.consume_finish_request()


def start_instrument(controller: ScriptController, setup: str | None) -> Session:
    """Create the session in the controller's namespace and load ``setup``.

    A setup that fails to load is reported to clients and logged; the daemon
    keeps running with whatever could be loaded, so the user can fix the file
    and try again with NewSetup().  A value history that cannot be opened is
    reported too; the instrument works without it.
    """
    session = Session(hooks=ControllerHooks(controller), namespace=controller.namespace,
                      datadir=controller.datadir)
    controller.session = session
    controller.namespace["session"] = session
    controller.simulations = Simulations(controller.bus.emit)
    controller.value_history = None
    try:
        controller.value_history = open_history(controller.datadir)
    except Exception as err:  # noqa: BLE001 - sqlite3.Error, OSError: run without history
        log.error("value history not available: %s", err)
        controller.report(f"value history not available: {err}", ERROR)
    else:
        session.add_value_listener(controller.value_history.record)
    if setup:
        try:
            session.load_setup(setup)
        except ConfigurationError as err:
            log.error("setup %r could not be loaded: %s", setup, err)
            controller.report(f"setup {setup!r} could not be loaded: {err}", ERROR)
        else:
            log.info("setup %r loaded: %d devices", setup, len(session.devices))
    return session
