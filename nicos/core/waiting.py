"""Waiting for devices to finish, in a way the user can interrupt.

Every poll round is a breakpoint of level BREAK_AFTER_STEP (BREAK_NOW when
waiting for a count), and the pause between rounds is the hooks'
interruptible sleep: a break or stop from a client reaches a script that
waits for a long move within one round.  In a dry run nothing is polled:
virtual time jumps to the end of the last motion or count.

If the wait is left by an interruption (the script controller's stop
exception, KeyboardInterrupt, or any unexpected error) while devices are
still busy, they are stopped and the user is told where they stopped: a stop
never leaves a device moving silently.  A device that ends in an error state
does not stop the others; the first such error is raised once all are done.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from nicos.core.errors import NicosError
from nicos.core.measurable import Measurable
from nicos.core.readable import Readable
from nicos.core.status import BUSY, is_failure
from nicos.protocols.daemon import BREAK_AFTER_STEP

if TYPE_CHECKING:
    from nicos.core.session import Session

user_log = logging.getLogger("nicos")

POLL_INTERVAL = 0.05


def wait_for_devices(session: Session, devices: Iterable[Readable],
                     poll_interval: float = POLL_INTERVAL,
                     level: int = BREAK_AFTER_STEP) -> None:
    """Return when none of ``devices`` is busy any more; raise the first failure.

    ``level``: the break level of the breakpoints in the poll loop (counting
    uses BREAK_NOW, so that "break after step" waits for the count).
    """
    pending = list(dict.fromkeys(devices))
    if session.dry_run is not None:
        session.dry_run.wait(pending)
        return
    failures: list[NicosError] = []
    try:
        while True:
            pending = _still_busy(pending, failures)
            if not pending:
                break
            session.hooks.breakpoint(level)
            session.hooks.sleep_at_level(poll_interval, level)
    except BaseException as interruption:
        stop_devices_after(pending, _reason(interruption))
        raise
    for extra in failures[1:]:
        user_log.error("%s", extra)
    if failures:
        raise failures[0]


def _still_busy(devices: list[Readable], failures: list[NicosError]) -> list[Readable]:
    busy = []
    for device in devices:
        try:
            if isinstance(device, Measurable):
                device.during_wait()
            status = device.status()
        except NicosError as err:
            failures.append(err)
            continue
        if status[0] == BUSY:
            busy.append(device)
        elif is_failure(status[0]):
            failures.append(device.failure_for(status))
    return busy


def stop_devices_after(devices: Iterable[Readable], reason: str) -> None:
    """Stop ``devices`` for ``reason`` (e.g. "script stopped"); say where
    each one stopped."""
    for device in devices:
        stop = getattr(device, "stop", None)
        if stop is None:
            continue
        try:
            stop()
            where = device.format(device.read(), unit=True)
            user_log.warning("%s stopped at %s (%s)", device, where, reason)
        except Exception as err:  # noqa: BLE001 - keep stopping the others
            user_log.error("%s: could not be stopped cleanly (%s): %s", device, reason, err)


def _reason(interruption: BaseException) -> str:
    if isinstance(interruption, KeyboardInterrupt):
        return "interrupted"
    if not isinstance(interruption, Exception):
        return "script stopped"  # the script controller's stop request
    return f"waiting failed: {interruption}"


__all__ = ["POLL_INTERVAL", "stop_devices_after", "wait_for_devices"]
