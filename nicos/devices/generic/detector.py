"""A detector: timers, monitors, counters and images counting together.

``det.start(t=5)`` counts for five seconds (the first timer is the master);
``det.start(mon1=10000)`` until monitor ``mon1`` has 10000 counts.  The
count ends when a master reaches its preset: then all channels are ended
at the moment it did.  While a script waits for the detector, a "finish"
request from a client ends the count early and keeps the data.
"""

from __future__ import annotations

import logging
import numbers
import threading
from typing import Any

import numpy

from nicos.core import (
    BUSY,
    OK,
    Attach,
    Channel,
    Measurable,
    Param,
    Status,
    UsageError,
    anytype,
)

user_log = logging.getLogger("nicos")

DEFAULT_PRESET = {"t": 1.0}


class Detector(Measurable):
    """Groups counting channels; one ``start`` runs them all."""

    attached_devices = {
        "timers": Attach("Timer channels (the first is the master for t=...)", Channel,
                         multiple=True, optional=True),
        "monitors": Attach("Monitor channels", Channel, multiple=True, optional=True),
        "counters": Attach("Counter channels", Channel, multiple=True, optional=True),
        "images": Attach("Image channels", Channel, multiple=True, optional=True),
    }
    parameters = {
        "lastpreset": Param("The preset of the last count", type=anytype, default=None,
                            internal=True),
    }

    def doInit(self) -> None:
        self._lock = threading.RLock()
        self._counting = False
        self._masters: list[Channel] = []

    # ------------------------------------------------------------ channels

    def channels(self) -> list[Channel]:
        """All channels, in the order of ``read()``."""
        return [*self._attached_device("timers"), *self._attached_device("monitors"),
                *self._attached_device("counters"), *self._attached_device("images")]

    def value_info(self) -> list[tuple[str, str]]:
        return [(ch.name, ch.unit) for ch in self.channels()]

    def value_types(self) -> list[str]:
        kinds = {"timers": "time", "monitors": "monitor", "counters": "counter",
                 "images": "counter"}
        return [kind for key, kind in kinds.items() for _ in self._attached_device(key)]

    def _preset_channel(self, key: str) -> Channel:
        timers = self._attached_device("timers")
        if key == "t" and timers:
            return timers[0]
        for channel in [*timers, *self._attached_device("monitors"),
                        *self._attached_device("counters")]:
            if channel.name == key:
                return channel
        names = ["t"] if timers else []
        names += [ch.name for ch in self.channels() if ch not in self._attached_device("images")]
        raise UsageError(f"{self}: no preset '{key}'; use one of {', '.join(names) or 'none'}")

    # -------------------------------------------------------------- count

    def doCheckPreset(self, preset: dict[str, Any]) -> dict[str, Any]:
        preset = dict(preset) if preset else dict(self._params["lastpreset"] or DEFAULT_PRESET)
        for key, value in preset.items():
            self._preset_channel(key)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or value <= 0:
                raise UsageError(f"{self}: preset {key}={value!r} must be a positive number")
        return preset

    def doEstimateCountTime(self, preset: dict[str, Any]) -> float:
        """The time preset, or the shortest time a channel preset needs at
        the channel's count rate (at the top of the peak)."""
        times = []
        for key, value in preset.items():
            if key == "t":
                times.append(float(value))
                continue
            rate = getattr(self._preset_channel(key), "countrate", None)
            if isinstance(rate, (int, float)) and rate > 0:
                times.append(float(value) / rate)
        return min(times, default=0.0)

    def doStart(self, preset: dict[str, Any]) -> None:
        masters = [(self._preset_channel(key), float(value)) for key, value in preset.items()]
        with self._lock:
            self._end_count(None)
            for channel in self.channels():
                channel.set_preset(None)
            for channel, value in masters:
                channel.set_preset(value)
            started: list[Channel] = []
            try:
                for channel in self.channels():
                    channel.start()
                    started.append(channel)
            except BaseException:
                for channel in started:
                    channel.stop()
                raise
            self._masters = [channel for channel, _ in masters]
            self._counting = True
            self._store_param("lastpreset", preset)
        self.status()

    def doFinish(self) -> None:
        self._end_count(None)

    def doStop(self) -> None:
        self._end_count(None)

    def _end_count(self, at: float | None) -> None:
        with self._lock:
            if not self._counting:
                return
            self._counting = False
            for channel in self.channels():
                channel.finish(at)

    def _end_if_preset_reached(self) -> None:
        with self._lock:
            if not self._counting:
                return
            times = [t for t in (m.preset_reached_at() for m in self._masters) if t is not None]
            if times:
                self._end_count(min(times))

    def during_wait(self) -> None:
        if self._counting and self._session.hooks.consume_finish_request():
            user_log.info("%s: finishing the count early, as requested", self)
            self._end_count(None)
        self._end_if_preset_reached()

    # ------------------------------------------------------------ reading

    def doRead(self) -> list[Any]:
        self._end_if_preset_reached()
        return [channel.read() for channel in self.channels()]

    def doStatus(self) -> Status:
        self._end_if_preset_reached()
        return (BUSY, "counting") if self._counting else (OK, "idle")

    def read_arrays(self) -> list[numpy.ndarray]:
        arrays = []
        for channel in self._attached_device("images"):
            array = channel.read_array()
            if array is not None:
                arrays.append(array)
        return arrays

    def format(self, value: Any, unit: bool = False) -> str:
        if not isinstance(value, (list, tuple)):
            return super().format(value, unit)
        return ", ".join(f"{ch.name} {ch.format(v, unit)}"
                         for ch, v in zip(self.channels(), value, strict=False))


__all__ = ["DEFAULT_PRESET", "Detector"]
