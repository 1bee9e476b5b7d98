"""The session's data handling: numbering, files, events, recent datasets.

A scan asks ``begin`` for a new dataset, hands every measured point to
``add_point`` and calls ``end`` once, however it ended.  The manager

- numbers datasets (the counter continues from the files already in
  ``<datadir>/scans``),
- writes each one to its own text file (see datafile.py), point by point,
- tells clients: ``dataset`` (the JSON form, see dataset.py) when a scan
  begins and ``datapoint`` ``[uid, xvalues, yvalues]`` for every point,
- keeps the last ``keep`` datasets in memory for ``getdataset``.

Without a data directory (``datadir=None``, e.g. a dry run or a test),
nothing is written.  A file that cannot be written is reported once; the
scan goes on and keeps its data in memory.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nicos.data.datafile import ScanFile, counter_of, header_time
from nicos.data.dataset import Dataset

user_log = logging.getLogger("nicos")

KEEP_DATASETS = 20
SCAN_FOLDER = "scans"
_CREATE_ATTEMPTS = 1000

Emit = Callable[[str, Any], None]


class DataManager:
    """Datasets of one session."""

    def __init__(self, emit: Emit, datadir: Path | None, keep: int = KEEP_DATASETS) -> None:
        self._emit = emit
        self.datadir = Path(datadir) if datadir is not None else None
        self._lock = threading.Lock()
        self._recent: deque[Dataset] = deque(maxlen=keep)
        self._counter: int | None = None
        self._files: dict[str, ScanFile] = {}

    @property
    def scan_folder(self) -> Path | None:
        return self.datadir / SCAN_FOLDER if self.datadir is not None else None

    # -------------------------------------------------------------- scans

    def begin(self, scaninfo: str, xinfo: Sequence[tuple[str, str]],
              yinfo: Sequence[tuple[str, str]], npoints: int,
              preset: dict[str, Any], ytypes: Sequence[str] | None = None) -> Dataset:
        """A new dataset, with its file begun and clients told."""
        started = time.time()
        with self._lock:
            counter, scanfile = self._new_counter_and_file()
            dataset = Dataset(str(uuid.uuid1()), counter, scaninfo, started, xinfo, yinfo,
                              npoints, preset, ytypes)
            self._recent.append(dataset)
        if scanfile is not None:
            self._begin_file(dataset, scanfile)
        self._emit("dataset", dataset.to_dict())
        return dataset

    def add_point(self, dataset: Dataset, xvalues: Sequence[Any],
                  yvalues: Sequence[Any]) -> None:
        x, y = dataset.add_point(xvalues, yvalues)
        scanfile = self._files.get(dataset.uid)
        if scanfile is not None:
            self._guarded(dataset, scanfile.add_point, [*x, *y])
        self._emit("datapoint", [dataset.uid, x, y])

    def end(self, dataset: Dataset, status: str) -> None:
        """The scan is over: ``status`` is finished, stopped or failed."""
        now = time.time()
        dataset.end(status, now)
        scanfile = self._files.pop(dataset.uid, None)
        if scanfile is not None:
            self._guarded(dataset, scanfile.end, status, now)

    # ------------------------------------------------------------ queries

    def recent(self) -> list[Dataset]:
        """The kept datasets, oldest first."""
        with self._lock:
            return list(self._recent)

    def get(self, index: int) -> Dataset | None:
        """A kept dataset by position (0: oldest kept, -1: latest), or None."""
        recent = self.recent()
        try:
            return recent[index]
        except IndexError:
            return None

    # -------------------------------------------------------------- files

    def _new_counter_and_file(self) -> tuple[int, ScanFile | None]:
        folder = self.scan_folder
        if self._counter is None:
            self._counter = self._last_counter_on_disk(folder)
        if folder is None:
            self._counter += 1
            return self._counter, None
        for _ in range(_CREATE_ATTEMPTS):
            self._counter += 1
            try:
                return self._counter, ScanFile.create(folder, self._counter)
            except FileExistsError:
                continue  # written by someone else meanwhile: take the next number
            except OSError as err:
                user_log.error("scan %d will not be saved: cannot create its file in %s: %s",
                               self._counter, folder, err)
                return self._counter, None
        user_log.error("scan %d will not be saved: no free file name in %s",
                       self._counter, folder)
        return self._counter, None

    @staticmethod
    def _last_counter_on_disk(folder: Path | None) -> int:
        if folder is None or not folder.is_dir():
            return 0
        counters = [c for c in (counter_of(p) for p in folder.iterdir()) if c is not None]
        return max(counters, default=0)

    def _begin_file(self, dataset: Dataset, scanfile: ScanFile) -> None:
        dataset.filepath = str(scanfile.path)
        header = [("counter", dataset.counter), ("uid", dataset.uid),
                  ("scaninfo", dataset.scaninfo), ("started", header_time(dataset.started)),
                  ("preset", ", ".join(f"{k}={v}" for k, v in dataset.preset.items())),
                  ("npoints", dataset.npoints)]
        self._files[dataset.uid] = scanfile
        self._guarded(dataset, scanfile.begin, header, [*dataset.xinfo, *dataset.yinfo])

    def _guarded(self, dataset: Dataset, action: Callable[..., None], *args: Any) -> None:
        try:
            action(*args)
        except OSError as err:
            scanfile = self._files.pop(dataset.uid, None)
            if scanfile is not None:
                scanfile.abandon()
            user_log.error("scan %d: cannot write %s (%s); the data are kept in memory only",
                           dataset.counter, dataset.filepath, err)


__all__ = ["KEEP_DATASETS", "SCAN_FOLDER", "DataManager"]
