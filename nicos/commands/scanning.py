"""Running a scan: move, count, record, point after point.

A scan is planned completely before anything moves: every target of every
point is checked (type and limits) and every detector checks the preset, so
a scan that would leave the limits at its 15th point is refused at once
(and found by a dry run).

Each point: move the devices and wait for them (a stop while moving stops
them and says where), read where they are, count, hand the point to the
session's data manager.  Between points the scan calls the breakpoint of
level BREAK_AFTER_STEP, so "break after step" pauses there.  Waiting for a
count uses level BREAK_NOW: a break after step lets the count finish, a
"break now" or a stop reaches into it (a stopped count stops the
detectors).  A client's "finish" ends the current count early and the scan
goes on with the next point.

However the scan ends, its dataset is closed with the status finished,
stopped (a stop request or Ctrl-C) or failed (an error), and the user is
told at which point that happened.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from nicos.commands.device import start_all
from nicos.core import Measurable, Moveable, NicosError, Session, wait_for_devices
from nicos.core.waiting import stop_devices_after
from nicos.data.dataset import FAILED, FINISHED, STOPPED, Dataset
from nicos.protocols.daemon import BREAK_AFTER_STEP, BREAK_NOW

user_log = logging.getLogger("nicos")

UNTIL_STOPPED = -1


@dataclass
class ScanPlan:
    """What a scan does.  ``positions``: per point one target per device
    (empty lists when nothing moves); ``npoints`` UNTIL_STOPPED for a
    timescan without end; ``time_column``: record the elapsed time as x."""

    command: str
    scaninfo: str
    devices: list[Moveable] = field(default_factory=list)
    positions: list[list[Any]] = field(default_factory=list)
    detectors: list[Measurable] = field(default_factory=list)
    preset: dict[str, Any] = field(default_factory=dict)
    npoints: int = 0
    time_column: bool = False

    def point_indices(self) -> Iterator[int]:
        index = 0
        while self.npoints == UNTIL_STOPPED or index < self.npoints:
            yield index
            index += 1


def check_plan(plan: ScanPlan) -> ScanPlan:
    """Convert and check every target and the preset; raise before anything
    moves.  Returns the plan with converted targets and the full preset."""
    checked = []
    for index, targets in enumerate(plan.positions):
        point = []
        for device, target in zip(plan.devices, targets, strict=True):
            try:
                point.append(device.check_target(target))
            except NicosError as err:
                raise type(err)(f"{plan.command}(): point {index + 1} of "
                                f"{len(plan.positions)}: {err}") from None
        checked.append(point)
    plan.positions = checked
    for detector in plan.detectors:
        plan.preset = detector.check_preset(plan.preset)
    return plan


def count_once(session: Session, detectors: Sequence[Measurable],
               preset: dict[str, Any]) -> list[Any]:
    """Count with all ``detectors`` for ``preset``; their values, in order."""
    started: list[Measurable] = []
    for detector in detectors:
        try:
            detector.start(**preset)
        except BaseException as err:
            stop_devices_after(started, f"{detector} could not start: {err}")
            raise
        started.append(detector)
    wait_for_devices(session, started, level=BREAK_NOW)
    return [value for detector in detectors for value in _as_list(detector.read())]


def run_scan(session: Session, plan: ScanPlan) -> Dataset:
    """Carry out a checked plan; returns the dataset."""
    xinfo = [(d.name, d.unit) for d in plan.devices]
    if plan.time_column:
        xinfo.append(("time", "s"))
    yinfo = [info for detector in plan.detectors for info in detector.value_info()]
    ytypes = [kind for detector in plan.detectors for kind in detector.value_types()]
    dataset = session.data.begin(plan.scaninfo, xinfo, yinfo, plan.npoints, plan.preset,
                                 ytypes)
    if session.dry_run is None:  # a dry run tells only the essentials
        _announce(plan, dataset)
    started = session.clock.time()
    status = FAILED
    index = -1
    try:
        for index in plan.point_indices():
            if index > 0:
                session.hooks.breakpoint(BREAK_AFTER_STEP)
            xvalues = _move(session, plan, index)
            if plan.time_column:
                xvalues.append(round(session.clock.time() - started, 6))
            yvalues = count_once(session, plan.detectors, plan.preset)
            session.data.add_point(dataset, xvalues, yvalues)
            if session.dry_run is None:  # a dry run tells only the essentials
                _report_point(plan, index, xvalues, yvalues)
        status = FINISHED
    except BaseException as err:
        status = FAILED if isinstance(err, Exception) else STOPPED
        where = f"point {index + 1}" + (f" of {plan.npoints}" if plan.npoints > 0 else "")
        user_log.warning("scan %d %s at %s (%d points measured)", dataset.counter,
                         "stopped" if status == STOPPED else "failed", where, len(dataset))
        raise
    finally:
        session.data.end(dataset, status)
    return dataset


def _move(session: Session, plan: ScanPlan, index: int) -> list[Any]:
    if not plan.devices:
        return []
    started = start_all(list(zip(plan.devices, plan.positions[index], strict=True)))
    wait_for_devices(session, started)
    return [device.read() for device in plan.devices]


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _announce(plan: ScanPlan, dataset: Dataset) -> None:
    points = "until stopped" if plan.npoints == UNTIL_STOPPED else f"{plan.npoints} point(s)"
    where = f", file {dataset.filepath}" if dataset.filepath else ""
    user_log.info("scan %d: %s, %s%s", dataset.counter, plan.scaninfo, points, where)


def _report_point(plan: ScanPlan, index: int, xvalues: list[Any],
                  yvalues: list[Any]) -> None:
    total = "" if plan.npoints == UNTIL_STOPPED else f"/{plan.npoints}"
    parts = [f"{d.name} {d.format(v)}" for d, v in zip(plan.devices, xvalues, strict=False)]
    if plan.time_column:
        parts.append(f"time {xvalues[-1]:.2f}")
    names = [name for detector in plan.detectors for name, _ in detector.value_info()]
    parts += [f"{name} {value}" for name, value in zip(names, yvalues, strict=False)]
    user_log.info("  %d%s  %s", index + 1, total, "  ".join(parts))


__all__ = ["UNTIL_STOPPED", "ScanPlan", "check_plan", "count_once", "run_scan"]
