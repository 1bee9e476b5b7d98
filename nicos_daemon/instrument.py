"""Connects the instrument session (nicos.core) to the script controller.

The session only knows the DaemonHooks interface; this adapter implements it
on the controller, and loads the configured setup at startup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from nicos.core.errors import ConfigurationError
from nicos.core.hooks import DaemonHooks
from nicos.core.session import Session
from nicos.protocols.daemon import ERROR
from nicos_daemon.controller import ScriptController

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

    def register_emergency_stop(self, func: Callable[[], None]) -> None:
        self._controller.register_emergency_stop(func)

    def consume_finish_request(self) -> bool:
        return self._controller.consume_finish_request()


def start_instrument(controller: ScriptController, setup: str | None) -> Session:
    """Create the session in the controller's namespace and load ``setup``.

    A setup that fails to load is reported to clients and logged; the daemon
    keeps running with whatever could be loaded, so the user can fix the file
    and try again with NewSetup().
    """
    session = Session(hooks=ControllerHooks(controller), namespace=controller.namespace)
    controller.session = session
    controller.namespace["session"] = session
    if setup:
        try:
            session.load_setup(setup)
        except ConfigurationError as err:
            log.error("setup %r could not be loaded: %s", setup, err)
            controller.report(f"setup {setup!r} could not be loaded: {err}", ERROR)
        else:
            log.info("setup %r loaded: %d devices", setup, len(session.devices))
    return session
