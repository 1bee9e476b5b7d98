"""User commands for devices: move, maw, wait, read, status, stop, reset, adjust."""

from __future__ import annotations

import logging
from typing import Any

from nicos.commands.arguments import (
    device_argument,
    device_arguments,
    device_target_pairs,
    info_of,
)
from nicos.core import (
    HasOffset,
    Measurable,
    Moveable,
    NicosError,
    Readable,
    Session,
    UsageError,
    usercommand,
    wait_for_devices,
)
from nicos.core.device import Device
from nicos.core.paramtypes import describe_value
from nicos.core.status import status_name
from nicos.core.waiting import stop_devices_after

user_log = logging.getLogger("nicos")

_WAITABLE = (Moveable, Measurable)


def start_all(pairs: list[tuple[Moveable, Any]]) -> list[Moveable]:
    """Check every target first, then start the devices one by one; if one
    refuses, the ones already started are stopped again."""
    checked = [(device, device.check_target(target)) for device, target in pairs]
    started: list[Moveable] = []
    for device, target in checked:
        try:
            device.start(target)
        except BaseException as err:
            stop_devices_after(started, f"{device} could not start: {err}")
            raise
        started.append(device)
    return started


@usercommand(needs="a device and a target", example="move(mono, 2.5)")
def move(session: Session, *dev_target_pairs: Any) -> None:
    """Start moving devices and return at once: ``move(mono, 2.5, sth, 10)``.

    All targets are checked (limits!) before any device moves.
    """
    start_all(device_target_pairs(session, info_of(move), dev_target_pairs))


@usercommand(needs="a device and a target", example="maw(mono, 2.5)")
def maw(session: Session, *dev_target_pairs: Any) -> None:
    """Move devices and wait until all have arrived: ``maw(mono, 2.5, sth, 10)``.

    All targets are checked before any device moves.  Stopping the script
    while waiting stops the devices (and says where they stopped).
    """
    started = start_all(device_target_pairs(session, info_of(maw), dev_target_pairs))
    wait_for_devices(session, started)


@usercommand(example="wait(mono, T)")
def wait(session: Session, *devices: Any) -> None:
    """Wait until the devices are no longer busy; ``wait()`` waits for all.

    To wait for a time, use ``sleep(seconds)``.
    """
    info = info_of(wait)
    for value in devices:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise info.usage_error(f"waits for devices, not for a time; "
                                   f"use sleep({value}) for that")
    wait_for_devices(session, device_arguments(session, info, devices, _WAITABLE))


@usercommand(example="read(mono)")
def read(session: Session, *devices: Any) -> None:
    """Show the value of devices: ``read(mono, T)``; ``read()`` shows all."""
    targets = device_arguments(session, info_of(read), devices, Readable)
    for device in targets:
        try:
            value = device.read()
        except NicosError as err:
            if devices:
                raise
            user_log.error("%s", err)
            continue
        user_log.info("%s = %s", device, device.format(value, unit=True))


@usercommand(example="status(mono)")
def status(session: Session, *devices: Any) -> None:
    """Show the status of devices: ``status(mono)``; ``status()`` shows all."""
    targets = device_arguments(session, info_of(status), devices, Readable)
    for device in targets:
        try:
            code, text = device.status()
        except NicosError as err:
            if devices:
                raise
            user_log.error("%s", err)
            continue
        user_log.info("%s: %s%s", device, status_name(code), f", {text}" if text else "")


def _stoppable(device: Device) -> bool:
    return callable(getattr(device, "stop", None))


@usercommand(example="stop(mono)")
def stop(session: Session, *devices: Any) -> None:
    """Stop devices now: ``stop(mono)``; ``stop()`` stops everything."""
    info = info_of(stop)
    if devices:
        targets = [device_argument(session, info, v) for v in devices]
        for device in targets:
            if not _stoppable(device):
                raise UsageError(f"stop(): {device} cannot be stopped "
                                 f"(it is a {type(device).__name__})")
    else:
        targets = [d for d in session.devices.values() if _stoppable(d)]
    failures = []
    for device in targets:
        try:
            device.stop()  # type: ignore[attr-defined]
            if isinstance(device, Moveable):
                user_log.info("%s stopped at %s", device,
                              device.format(device.read(), unit=True))
            else:
                user_log.info("%s stopped", device)
        except NicosError as err:
            failures.append(err)
            user_log.error("%s", err)
    if failures:
        raise failures[0]


@usercommand(example="reset(mono)")
def reset(session: Session, *devices: Any) -> None:
    """Clear the error state of devices (where possible) and show their status."""
    for device in device_arguments(session, info_of(reset), devices, Readable):
        code, text = device.reset()
        user_log.info("%s: %s%s", device, status_name(code), f", {text}" if text else "")


@usercommand(needs="a device and the value it should read now", example="adjust(sth, 0)")
def adjust(session: Session, device: Any, value: Any) -> None:
    """Declare the current position of a device to be the given value.

    The device's offset changes; its limits move along.  Typical use, after
    aligning on a peak: ``adjust(sth, 0)``.
    """
    info = info_of(adjust)
    dev = device_argument(session, info, device, Moveable)
    if not isinstance(dev, HasOffset):
        raise UsageError(f"adjust(): {dev} cannot be adjusted (it has no offset)")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise info.usage_error(f"needs a number as new value, got {describe_value(value)}")
    old = dev.read()
    offset = dev.adjust(value)
    user_log.info("%s adjusted: %s is now %s (offset %s)", dev, dev.format(old, unit=True),
                  dev.format(dev.read(), unit=True), dev.format(offset, unit=True))


__all__ = ["adjust", "maw", "move", "read", "reset", "status", "stop", "wait"]
