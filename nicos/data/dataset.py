"""One scan (or count) as data: what was moved, what was counted, per point.

Points are appended as the scan goes; ``positions`` and ``counts`` give
them as numpy arrays (one row per point, one column per device or channel).
``to_dict`` is the form sent to clients (``dataset`` event, ``getdataset``):
plain JSON values only, because the upstream scan-data object cannot be
sent without pickle.  Its keys are named after the upstream object's
attributes, so a client can wrap it in an attribute object::

    {"uid": str, "counter": int, "scaninfo": str,
     "started": float (Unix time), "finished": float or null,
     "status": "running" | "finished" | "stopped" | "failed",
     "npoints": int (planned; -1: until stopped),
     "preset": {name: number},
     "xindex": 0,
     "xvalueinfo": [{"name": str, "unit": str, "type": "other"}, ...],
     "yvalueinfo": [{"name": str, "unit": str, "type": str}, ...],
     "xresults": [[number, ...], ...],   # one list per point
     "yresults": [[number, ...], ...],
     "filepaths": [str]}                   # empty if not written

A value's ``type`` is ``time``, ``monitor``, ``counter`` or ``other``, as
upstream; ``counter`` columns are what plots show first.  Numbers that are
not finite are sent as null.  A dataset keeps at most MAX_POINTS_IN_MEMORY
points in memory (the latest); its file has all.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Sequence
from typing import Any

import numpy

RUNNING, FINISHED, STOPPED, FAILED = "running", "finished", "stopped", "failed"

# points kept in memory per dataset (an endless timescan); the file has all
MAX_POINTS_IN_MEMORY = 100_000


def plain_number(value: Any) -> float | int | None:
    """A value as a JSON number: ints stay ints, non-finite numbers and
    anything that is not a number become None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


class Dataset:
    """The data of one scan; points are added by the scan as it goes."""

    def __init__(self, uid: str, counter: int, scaninfo: str, started: float,
                 xinfo: Sequence[tuple[str, str]], yinfo: Sequence[tuple[str, str]],
                 npoints: int, preset: dict[str, Any],
                 ytypes: Sequence[str] | None = None) -> None:
        self.uid = uid
        self.counter = counter
        self.scaninfo = scaninfo
        self.started = started
        self.xinfo = [(str(n), str(u)) for n, u in xinfo]
        self.yinfo = [(str(n), str(u)) for n, u in yinfo]
        self.ytypes = list(ytypes) if ytypes is not None else ["other"] * len(self.yinfo)
        self.npoints = npoints
        self.preset = dict(preset)
        self.filepath = ""
        self.status = RUNNING
        self.finished: float | None = None
        self.points_dropped = 0  # the oldest points, beyond MAX_POINTS_IN_MEMORY
        self._lock = threading.Lock()
        self._x: list[list[float | int | None]] = []
        self._y: list[list[float | int | None]] = []

    # ------------------------------------------------------------ points

    def add_point(self, xvalues: Sequence[Any], yvalues: Sequence[Any]) -> tuple[list, list]:
        """Append a point; returns the values as stored (plain numbers)."""
        x = [plain_number(v) for v in xvalues]
        y = [plain_number(v) for v in yvalues]
        with self._lock:
            self._x.append(x)
            self._y.append(y)
            if len(self._x) > MAX_POINTS_IN_MEMORY:
                del self._x[0], self._y[0]
                self.points_dropped += 1
        return x, y

    def end(self, status: str, when: float) -> None:
        self.status = status
        self.finished = when

    def __len__(self) -> int:
        with self._lock:
            return len(self._x)

    def __repr__(self) -> str:
        where = f", {self.filepath}" if self.filepath else ""
        return f"<dataset {self.counter}: {self.scaninfo}, {len(self)} points, {self.status}{where}>"

    def point(self, index: int) -> tuple[list[Any], list[Any]]:
        """``(xvalues, yvalues)`` of one point, as stored (plain numbers)."""
        with self._lock:
            return list(self._x[index]), list(self._y[index])

    # ------------------------------------------------------------ arrays

    @property
    def names(self) -> list[str]:
        """Column names: moved devices, then channels."""
        return [n for n, _ in self.xinfo] + [n for n, _ in self.yinfo]

    @property
    def positions(self) -> numpy.ndarray:
        """Device positions, shape (points, devices); NaN where unknown."""
        with self._lock:
            return _array(self._x, len(self.xinfo))

    @property
    def counts(self) -> numpy.ndarray:
        """Channel values, shape (points, channels); NaN where unknown."""
        with self._lock:
            return _array(self._y, len(self.yinfo))

    def column(self, name: str) -> numpy.ndarray:
        """The values of one device or channel, by name."""
        xnames = [n for n, _ in self.xinfo]
        if name in xnames:
            return self.positions[:, xnames.index(name)]
        ynames = [n for n, _ in self.yinfo]
        if name in ynames:
            return self.counts[:, ynames.index(name)]
        raise KeyError(f"dataset {self.counter} has no column '{name}'; "
                       f"it has {', '.join(self.names)}")

    # -------------------------------------------------------------- wire

    def to_dict(self) -> dict[str, Any]:
        """The JSON form sent to clients (see the module docstring)."""
        with self._lock:
            xresults = [list(p) for p in self._x]
            yresults = [list(p) for p in self._y]
        return {
            "uid": self.uid,
            "counter": self.counter,
            "scaninfo": self.scaninfo,
            "started": self.started,
            "finished": self.finished,
            "status": self.status,
            "npoints": self.npoints,
            "preset": {str(k): plain_number(v) for k, v in self.preset.items()},
            "xindex": 0,
            "xvalueinfo": [{"name": n, "unit": u, "type": "other"} for n, u in self.xinfo],
            "yvalueinfo": [{"name": n, "unit": u, "type": t}
                           for (n, u), t in zip(self.yinfo, self.ytypes, strict=False)],
            "xresults": xresults,
            "yresults": yresults,
            "filepaths": [self.filepath] if self.filepath else [],
        }


def _array(rows: list[list[float | int | None]], width: int) -> numpy.ndarray:
    array = numpy.full((len(rows), width), numpy.nan)
    for index, row in enumerate(rows):
        array[index, :] = [numpy.nan if v is None else v for v in row]
    return array


__all__ = ["FAILED", "FINISHED", "MAX_POINTS_IN_MEMORY", "RUNNING", "STOPPED", "Dataset",
           "plain_number"]
