"""The data file of a scan: plain text that ``numpy.loadtxt`` reads as it is.

One file per scan, ``<datadir>/scans/scan_<counter, 6 digits>.dat``::

    # NICOS-NG scan data, format 1
    # counter: 42
    # uid: 5f0c...
    # scaninfo: scan(sth, 9, 0.25, 9, t=1)
    # started: 2024-05-01 12:00:00 (1714557600.123)
    # preset: t=1
    # npoints: 9
    # columns: sth [deg], timer [s], mon1 [cts], ctr1 [cts], image [cts]
    # sth	timer	mon1	ctr1	image
    9.0	1.0	4987	12	431
    ...
    # ended: 2024-05-01 12:00:20 (1714557620.456), status finished, 9 points

Header lines start with ``#`` and hold ``key: value``; the last ``#`` line
before the data names the columns (tab-separated): first the moved devices
(none for a count; ``time`` in seconds for a timescan), then the detector
channels.  Data lines are tab-separated numbers, ``nan`` where a value was
unknown.  Each point is written (and flushed) as soon as it is measured, so
a stopped scan leaves a valid file with the points it has; the last line
says how it ended.

``numpy.loadtxt(path, ndmin=2)`` gives the numbers; ``read_scan(path)`` also
the header and the column names.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy

FORMAT_LINE = "# NICOS-NG scan data, format 1"
FILE_PREFIX = "scan_"
FILE_SUFFIX = ".dat"


def scan_file_name(counter: int) -> str:
    return f"{FILE_PREFIX}{counter:06d}{FILE_SUFFIX}"


def counter_of(path: Path) -> int | None:
    """The scan counter in a data file's name, or None for other files."""
    name = path.name
    if not (name.startswith(FILE_PREFIX) and name.endswith(FILE_SUFFIX)):
        return None
    digits = name[len(FILE_PREFIX):-len(FILE_SUFFIX)]
    return int(digits) if digits.isdigit() else None


def _when(timestamp: float) -> str:
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(timestamp))} ({timestamp:.3f})"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _number(value: Any) -> str:
    if value is None:
        return "nan"
    return repr(value) if isinstance(value, float) else str(value)


class ScanFile:
    """Writes one scan's file, point by point."""

    def __init__(self, path: Path, stream: IO[str]) -> None:
        self.path = path
        self._stream = stream
        self._points = 0

    @classmethod
    def create(cls, folder: Path, counter: int) -> ScanFile:
        """Create the file for ``counter``; FileExistsError if it is there."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / scan_file_name(counter)
        return cls(path, open(path, "x", encoding="utf-8"))  # closed in end()

    def begin(self, header: Sequence[tuple[str, Any]],
              columns: Sequence[tuple[str, str]]) -> None:
        lines = [FORMAT_LINE]
        lines += [f"# {key}: {_one_line(value)}" for key, value in header]
        lines.append("# columns: " + ", ".join(f"{n} [{u}]" if u else n for n, u in columns))
        lines.append("# " + "\t".join(n for n, _ in columns))
        self._write(lines)

    def add_point(self, values: Sequence[Any]) -> None:
        self._points += 1
        self._write(["\t".join(_number(v) for v in values)])

    def end(self, status: str, when: float) -> None:
        try:
            self._write([f"# ended: {_when(when)}, status {status}, {self._points} points"])
        finally:
            self._stream.close()

    def abandon(self) -> None:
        """Close after a write error, without writing more."""
        try:
            self._stream.close()
        except OSError:
            pass

    def _write(self, lines: list[str]) -> None:
        self._stream.write("\n".join(lines) + "\n")
        self._stream.flush()


def header_time(timestamp: float) -> str:
    """How times appear in the header: local time and Unix time."""
    return _when(timestamp)


def read_scan(path: str | Path) -> tuple[dict[str, str], list[str], numpy.ndarray]:
    """``(header, column names, data)`` of a scan file; data has one row per
    point (shape (0, columns) for a file without points)."""
    header: dict[str, str] = {}
    names: list[str] = []
    in_data = False
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            if not line.startswith("#"):
                in_data = in_data or bool(line.strip())
                continue
            text = line[1:].strip()
            key, sep, value = text.partition(": ")
            if sep and "\t" not in text and key.isidentifier():
                header[key] = value
            elif text and text != FORMAT_LINE[2:] and not in_data:
                names = text.split("\t")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
        data = numpy.loadtxt(path, ndmin=2)
    if data.size == 0:
        data = numpy.empty((0, len(names)))
    return header, names, data


__all__ = ["FORMAT_LINE", "ScanFile", "counter_of", "header_time", "read_scan",
           "scan_file_name"]
