"""Scan data as the plots see it, built from ``dataset`` and ``datapoint`` events.

No Qt here.  The ``dataset`` event of this daemon is a JSON object; the keys
read are those of upstream's scan-data attributes (``uid``, ``scaninfo``,
``counter``, ``xindex``, ``xvalueinfo``, ``yvalueinfo``, ``xresults``,
``yresults``) plus plainer alternatives (``title``, ``xnames``, ``ynames``,
``xunits``, ``yunits``), so that small differences in the format do not lose
the plot.  A ``datapoint`` for an unknown uid starts a scan of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .values import to_float

MAX_SCANS = 20


def _names_units(info: Any, names: Any, units: Any) -> tuple[list[str], list[str], list[str]]:
    """(names, units, types) from a value-info list or from plain name/unit lists."""
    out_names: list[str] = []
    out_units: list[str] = []
    out_types: list[str] = []
    if isinstance(info, list) and info:
        for entry in info:
            if isinstance(entry, dict):
                out_names.append(str(entry.get('name', '')))
                out_units.append(str(entry.get('unit', '') or ''))
                out_types.append(str(entry.get('type', '') or ''))
            elif isinstance(entry, list | tuple) and entry:
                out_names.append(str(entry[0]))
                out_units.append(str(entry[1]) if len(entry) > 1 else '')
                out_types.append(str(entry[2]) if len(entry) > 2 else '')
            else:
                out_names.append(str(entry))
                out_units.append('')
                out_types.append('')
        return out_names, out_units, out_types
    if isinstance(names, list):
        out_names = [str(n) for n in names]
        out_units = [str(u) for u in units] if isinstance(units, list) else []
        out_units += [''] * (len(out_names) - len(out_units))
        return out_names, out_units, [''] * len(out_names)
    return [], [], []


@dataclass
class ScanData:
    uid: str
    title: str = ''
    xnames: list[str] = field(default_factory=list)
    xunits: list[str] = field(default_factory=list)
    ynames: list[str] = field(default_factory=list)
    yunits: list[str] = field(default_factory=list)
    ytypes: list[str] = field(default_factory=list)
    xindex: int = 0
    xvalues: list[list[Any]] = field(default_factory=list)
    yvalues: list[list[Any]] = field(default_factory=list)

    def update_from(self, dataset: dict[str, Any]) -> None:
        """Take over what a ``dataset`` event says about this scan."""
        title = dataset.get('title') or dataset.get('scaninfo') or dataset.get('info')
        counter = dataset.get('counter') or dataset.get('number')
        if title or counter:
            self.title = f'#{counter} {title or ""}'.strip() if counter else str(title)
        names, units, _types = _names_units(dataset.get('xvalueinfo'), dataset.get('xnames'),
                                            dataset.get('xunits'))
        if names:
            self.xnames, self.xunits = names, units
        names, units, types = _names_units(dataset.get('yvalueinfo'), dataset.get('ynames'),
                                           dataset.get('yunits'))
        if names:
            self.ynames, self.yunits, self.ytypes = names, units, types
        xindex = dataset.get('xindex')
        if isinstance(xindex, int) and not isinstance(xindex, bool) and xindex >= 0:
            self.xindex = xindex
        xresults, yresults = dataset.get('xresults'), dataset.get('yresults')
        if isinstance(xresults, list) and isinstance(yresults, list) \
                and len(xresults) == len(yresults) and len(xresults) > len(self.xvalues):
            self.xvalues = [list(x) if isinstance(x, list) else [x] for x in xresults]
            self.yvalues = [list(y) if isinstance(y, list) else [y] for y in yresults]

    def add_point(self, xvalues: Any, yvalues: Any) -> None:
        xs = list(xvalues) if isinstance(xvalues, list | tuple) else [xvalues]
        ys = list(yvalues) if isinstance(yvalues, list | tuple) else [yvalues]
        self.xvalues.append(xs)
        self.yvalues.append(ys)
        width = max(len(ys), len(self.ynames))
        while len(self.ynames) < width:
            self.ynames.append(f'y{len(self.ynames) + 1}')
            self.yunits.append('')
            self.ytypes.append('')
        while len(self.xnames) < len(xs):
            self.xnames.append(f'x{len(self.xnames) + 1}')
            self.xunits.append('')

    @property
    def npoints(self) -> int:
        return len(self.xvalues)

    def x_label(self) -> str:
        if self.xindex < len(self.xnames):
            unit = self.xunits[self.xindex] if self.xindex < len(self.xunits) else ''
            return f'{self.xnames[self.xindex]} ({unit})' if unit else self.xnames[self.xindex]
        return 'x'

    def default_y(self) -> int:
        """The column to show first: a counter if the info says so, otherwise
        the first column that is neither a time nor a monitor."""
        for index, kind in enumerate(self.ytypes):
            if kind == 'counter':
                return index
        for index, name in enumerate(self.ynames):
            if not name.lower().startswith(('time', 'timer', 'mon')):
                return index
        return 0

    def curve(self, ycolumn: int) -> tuple[list[float], list[float]]:
        """Plottable (x, y) pairs; points without numbers are left out."""
        xs: list[float] = []
        ys: list[float] = []
        for xrow, yrow in zip(self.xvalues, self.yvalues, strict=False):
            x = to_float(xrow[self.xindex]) if self.xindex < len(xrow) else None
            y = to_float(yrow[ycolumn]) if ycolumn < len(yrow) else None
            if x is not None and y is not None:
                xs.append(x)
                ys.append(y)
        return xs, ys


class ScanStore:
    """The recent scans, newest last."""

    def __init__(self) -> None:
        self.scans: dict[str, ScanData] = {}

    def _get(self, uid: str) -> tuple[ScanData, bool]:
        scan = self.scans.get(uid)
        if scan is not None:
            return scan, False
        scan = ScanData(uid=uid, title=f'scan {uid[:8]}')
        self.scans[uid] = scan
        while len(self.scans) > MAX_SCANS:
            self.scans.pop(next(iter(self.scans)))
        return scan, True

    def on_dataset(self, dataset: Any) -> tuple[ScanData, bool] | None:
        """Apply a ``dataset`` event; returns (scan, is_new) or None if unusable."""
        if not isinstance(dataset, dict) or not dataset.get('uid'):
            return None
        scan, new = self._get(str(dataset['uid']))
        scan.update_from(dataset)
        return scan, new

    def on_datapoint(self, data: Any) -> tuple[ScanData, bool] | None:
        """Apply a ``datapoint`` event ``[uid, xvalues, yvalues]``."""
        if not (isinstance(data, list) and len(data) >= 3):
            return None
        scan, new = self._get(str(data[0]))
        scan.add_point(data[1], data[2])
        return scan, new


__all__ = ['ScanData', 'ScanStore']
