"""Counting and scanning commands: count, scan, cscan, timescan.

The arguments are checked and turned into a ScanPlan (scanning.py), which
is checked completely (targets, limits, preset) before anything moves.
Detectors may be named after the scan's own arguments; without any, all
loaded detectors count.  Keyword arguments are the preset: ``t=1`` (time),
or a channel name (``mon1=10000``).
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence
from typing import Any

from nicos.commands.arguments import device_argument, info_of
from nicos.commands.scanning import UNTIL_STOPPED, ScanPlan, check_plan, run_scan
from nicos.core import Device, Measurable, Moveable, Session, UsageError, usercommand
from nicos.core.paramtypes import describe_value
from nicos.core.usercommand import CommandInfo
from nicos.data.dataset import Dataset

user_log = logging.getLogger("nicos")


# ----------------------------------------------------------------- arguments


def _number(info: CommandInfo, value: Any, what: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise info.usage_error(f"needs {what} as a number, got {describe_value(value)}")
    return float(value)


def _count(info: CommandInfo, value: Any, what: str, allow_endless: bool = False) -> int:
    endless = allow_endless and value == UNTIL_STOPPED
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or \
            (value < 1 and not endless):
        hint = " (or -1: until stopped)" if allow_endless else ""
        raise info.usage_error(f"needs {what} as a whole number >= 1{hint}, "
                               f"got {describe_value(value)}")
    return int(value)


def _detectors(session: Session, info: CommandInfo, values: Sequence[Any],
               required: bool) -> list[Measurable]:
    for value in values:
        if not isinstance(value, (Device, str)):
            raise info.usage_error(f"got {describe_value(value)} where a detector "
                                   "(or nothing more) was expected")
    if values:
        return [device_argument(session, info, v, Measurable) for v in values]
    found = [d for d in session.devices.values() if isinstance(d, Measurable)]
    if required and not found:
        raise UsageError(f"{info.name}() needs a detector, and none is loaded")
    return found


def _moveables(session: Session, info: CommandInfo, value: Any) -> list[Moveable]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise info.usage_error("needs at least one device to scan")
    return [device_argument(session, info, v, Moveable) for v in values]


def _per_device(info: CommandInfo, value: Any, devices: list[Moveable], what: str) -> list[float]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) != len(devices):
        raise info.usage_error(f"needs one {what} per device ({len(devices)}), "
                               f"got {len(values)}")
    return [_number(info, v, what) for v in values]


def _call_text(name: str, args: Sequence[Any], preset: dict[str, Any]) -> str:
    def show(value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(show(v) for v in value) + "]"
        return str(value) if isinstance(value, Device) else repr(value)
    parts = [show(a) for a in args] + [f"{k}={v!r}" for k, v in preset.items()]
    return f"{name}({', '.join(parts)})"


def _shown(given: Any, devices: list[Moveable]) -> Any:
    """The scanned devices as the user gave them (one or a list), as objects."""
    return devices if isinstance(given, (list, tuple)) else devices[0]


def _run(session: Session, plan: ScanPlan) -> Dataset:
    return run_scan(session, check_plan(plan))


# ------------------------------------------------------------------ commands


@usercommand(example="count(t=5)")
def count(session: Session, *detectors: Any, **preset: Any) -> list[Any]:
    """Count with the detectors and return their values.

    ``count(t=5)`` counts five seconds with all detectors, ``count(det,
    mon1=10000)`` until the monitor has 10000 counts, ``count(5)`` is
    ``count(t=5)``.  The count is a one-point dataset with its own file.
    """
    info = info_of(count)
    if detectors and isinstance(detectors[0], numbers.Real) and \
            not isinstance(detectors[0], bool):
        if "t" in preset:
            raise info.usage_error("got the time twice")
        preset = {"t": _number(info, detectors[0], "a time"), **preset}
        detectors = detectors[1:]
    dets = _detectors(session, info, detectors, required=True)
    shown = dets if detectors else []
    dataset = _run(session, ScanPlan("count", _call_text("count", shown, preset),
                                     detectors=dets, preset=preset, npoints=1,
                                     positions=[[]]))
    return dataset.point(0)[1]


@usercommand(needs="a device, start, step and number of points",
             example="scan(sth, 0, 0.1, 21, t=1)")
def scan(session: Session, dev: Any, *args: Any, **preset: Any) -> Dataset:
    """Move a device in steps and count at each point.

    ``scan(sth, 0, 0.1, 21, t=1)``: 21 points from 0 to 2 in steps of 0.1,
    counting one second at each.  Several devices move together:
    ``scan([sth, stt], [0, 0], [0.1, 0.2], 21, t=1)``.  Explicit positions:
    ``scan(sth, [0, 0.5, 2], t=1)``.  Detectors may follow the number of
    points: ``scan(sth, 0, 0.1, 21, det, t=1)``.  Returns the dataset
    (``.positions``, ``.counts``, ``.column('ctr1')`` are numpy arrays).
    """
    info = info_of(scan)
    devices = _moveables(session, info, dev)
    if args and isinstance(args[0], (list, tuple)) and not isinstance(dev, (list, tuple)):
        positions = [[p] for p in args[0]]
        if not positions:
            raise info.usage_error("needs at least one position")
        rest = args[1:]
        shown = args[:1]
    else:
        if len(args) < 3:
            raise info.usage_error()
        starts = _per_device(info, args[0], devices, "start")
        steps = _per_device(info, args[1], devices, "step")
        npoints = _count(info, args[2], "the number of points")
        positions = [[s + i * d for s, d in zip(starts, steps, strict=True)]
                     for i in range(npoints)]
        rest = args[3:]
        shown = args[:3]
    dets = _detectors(session, info, rest, required=False)
    text = _call_text("scan", [_shown(dev, devices), *shown, *(dets if rest else [])], preset)
    return _run(session, ScanPlan("scan", text,
                                  devices=devices, positions=positions, detectors=dets,
                                  preset=preset, npoints=len(positions)))


@usercommand(needs="a device, center, step and number of points on each side",
             example="cscan(sth, 10, 0.1, 10, t=1)")
def cscan(session: Session, dev: Any, center: Any, step: Any, numperside: Any,
          *detectors: Any, **preset: Any) -> Dataset:
    """Scan around a center: ``cscan(sth, 10, 0.1, 10, t=1)`` measures 21
    points from 9 to 11.  Several devices: lists of devices, centers, steps.
    Returns the dataset."""
    info = info_of(cscan)
    devices = _moveables(session, info, dev)
    centers = _per_device(info, center, devices, "center")
    steps = _per_device(info, step, devices, "step")
    side = _count(info, numperside, "the number of points on each side")
    positions = [[c + (i - side) * d for c, d in zip(centers, steps, strict=True)]
                 for i in range(2 * side + 1)]
    dets = _detectors(session, info, detectors, required=False)
    text = _call_text("cscan", [_shown(dev, devices), center, step, numperside,
                               *(dets if detectors else [])], preset)
    return _run(session, ScanPlan("cscan", text, devices=devices, positions=positions,
                                  detectors=dets, preset=preset, npoints=len(positions)))


@usercommand(needs="the number of points", example="timescan(10, t=1)")
def timescan(session: Session, npoints: Any, *detectors: Any, **preset: Any) -> Dataset:
    """Count repeatedly without moving: ``timescan(10, t=1)``; ``timescan(-1,
    t=1)`` goes on until stopped.  The x column is the time since the start
    in seconds.  Returns the dataset."""
    info = info_of(timescan)
    points = _count(info, npoints, "the number of points", allow_endless=True)
    dets = _detectors(session, info, detectors, required=True)
    text = _call_text("timescan", [npoints, *(dets if detectors else [])], preset)
    return _run(session, ScanPlan("timescan", text, detectors=dets, preset=preset,
                                  npoints=points, time_column=True,
                                  positions=[] if points == UNTIL_STOPPED else [[]] * points))


__all__ = ["count", "cscan", "scan", "timescan"]
