"""Devices that count: channels (a timer, a counter, an image) and detectors
that run several channels together for a preset.

A count is: ``start(t=5)`` (or another preset), then ``wait()``; the
detector ends when its master channel reaches the preset, or earlier on
``finish()`` (keeping the data) or ``stop()``.  ``read()`` gives one number
per channel, ``read_arrays()`` the images; ``value_info()`` names them, so
a scan can label its columns without knowing the channels.
"""

from __future__ import annotations

from typing import Any

import numpy

from nicos.core.params import Param
from nicos.core.paramtypes import none_or
from nicos.core.readable import Readable


class Channel(Readable):
    """One counting channel of a detector.

    A channel with a ``preset`` is a master: the count ends when it gets
    there.  Without one it counts until the detector ends the count.
    """

    parameters = {
        "preset": Param("Count until the value reaches this (None: not a master)",
                        type=none_or(float), default=None, internal=True),
    }

    def set_preset(self, value: float | None) -> None:
        self._store_param("preset", value)

    def start(self) -> None:
        """Clear and begin counting."""
        self.doStart()

    def finish(self, at: float | None = None) -> None:
        """End counting, keeping what was counted.  ``at``: the clock time
        the count really ended (the moment the master reached its preset),
        when known; channels that can count up to it exactly do so."""
        self.doFinish(at)

    def stop(self) -> None:
        """Abort counting (may be called from any thread)."""
        self.doFinish(None)

    def preset_reached_at(self) -> float | None:
        """Clock time at which this master reached its preset, or None."""
        return self.doPresetReachedAt()

    def read_array(self) -> numpy.ndarray | None:
        """The channel's array data (images), or None."""
        return None

    def doStart(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement doStart()")

    def doFinish(self, at: float | None) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement doFinish()")

    def doPresetReachedAt(self) -> float | None:
        return None


class Measurable(Readable):
    """A device that counts for a preset (a detector)."""

    def start(self, **preset: Any) -> None:
        """Begin a count; ``preset`` such as ``t=5`` says when it ends.
        A wrong preset is refused before anything starts."""
        preset = self.check_preset(preset)
        dry_run = self._session.dry_run
        if dry_run is not None:
            dry_run.count(self, self.estimate_count_time(preset))
        else:
            self.doStart(preset)

    def check_preset(self, preset: dict[str, Any]) -> dict[str, Any]:
        """The preset to count with (defaults filled in); raises UsageError
        for a preset the device does not know."""
        return self.doCheckPreset(dict(preset))

    def estimate_count_time(self, preset: dict[str, Any]) -> float:
        """Seconds a count with ``preset`` would take (0 if unknown)."""
        try:
            seconds = float(self.doEstimateCountTime(preset))
        except Exception:  # noqa: BLE001 - an estimate must never break a dry run
            return 0.0
        return seconds if seconds > 0 and seconds != float("inf") else 0.0

    def wait(self) -> list[Any]:
        """Wait until the count is over; returns ``read()``."""
        from nicos.core.waiting import wait_for_devices  # waiting imports readable

        wait_for_devices(self._session, [self])
        return self.read()

    def finish(self) -> None:
        """End the count now, keeping the data counted so far."""
        if self._session.dry_run is not None:
            self._session.dry_run.stop(self)
        else:
            self.doFinish()

    def stop(self) -> None:
        """Abort the count (may be called from any thread)."""
        if self._session.dry_run is not None:
            self._session.dry_run.stop(self)
        else:
            self.doStop()

    def during_wait(self) -> None:
        """Called in every round of waiting for this device (in the waiting
        thread): the place to react to requests such as "finish early"."""

    def value_info(self) -> list[tuple[str, str]]:
        """``(name, unit)`` of each number ``read()`` returns."""
        return []

    def value_types(self) -> list[str]:
        """What each number of ``read()`` is: ``time``, ``monitor``,
        ``counter`` or ``other`` (plots pick their default curve by it)."""
        return ["other"] * len(self.value_info())

    def read_arrays(self) -> list[numpy.ndarray]:
        """The array data (images) of the last or current count."""
        return []

    def _simulated_value(self) -> Any:
        return [0] * len(self.value_info())

    def doCheckPreset(self, preset: dict[str, Any]) -> dict[str, Any]:
        return preset

    def doEstimateCountTime(self, preset: dict[str, Any]) -> float:
        return float(preset.get("t", 0.0))

    def doStart(self, preset: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement doStart()")

    def doFinish(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement doFinish()")

    def doStop(self) -> None:
        self.doFinish()


__all__ = ["Channel", "Measurable"]
