"""Behaviour shared by many moveable devices: limits and an adjustable offset.

Coordinates: the hardware works in raw values; users see ``raw - offset``.
``abslimits`` are the hardware's own limits, in raw values, fixed in the
setup.  ``userlimits`` are what the user allows, in user values, always
inside the absolute limits; ``adjust`` shifts them along with the offset, so
they keep their physical meaning.
"""

from __future__ import annotations

from typing import Any

from nicos.core.errors import ConfigurationError, InvalidValueError
from nicos.core.params import Param
from nicos.core.paramtypes import limits
from nicos.core.readable import Moveable


class HasLimits(Moveable):
    """A moveable with absolute and user limits, checked before every move."""

    parameters = {
        "abslimits": Param("Limits of the hardware (raw values)", type=limits,
                           mandatory=True, unit="main"),
        "userlimits": Param("Limits set by the user, within the absolute limits",
                            type=limits, settable=True, unit="main"),
    }

    def absolute_limits(self) -> tuple[float, float]:
        """The absolute limits as user values."""
        low, high = (self._raw_to_user(v) for v in self.abslimits)
        return (min(low, high), max(low, high))

    def _validate_config(self, given: set[str]) -> None:
        super()._validate_config(given)
        if "userlimits" not in given:
            self._params["userlimits"] = self.absolute_limits()
        elif not self._inside_absolute(self._params["userlimits"]):
            raise ConfigurationError(self._outside_message(self._params["userlimits"]))

    def doWriteUserlimits(self, value: tuple[float, float]) -> None:
        if not self._inside_absolute(value):
            raise InvalidValueError(self._outside_message(value))

    def _inside_absolute(self, value: tuple[float, float]) -> bool:
        low, high = self.absolute_limits()
        return low <= value[0] and value[1] <= high

    def _outside_message(self, value: tuple[float, float]) -> str:
        low, high = self.absolute_limits()
        return (f"{self}: user limits ({value[0]:g}, {value[1]:g}) must lie within the "
                f"absolute limits ({low:g}, {high:g})")

    def isAllowed(self, target: Any) -> tuple[bool, str]:
        low, high = self.absolute_limits()
        if not low <= target <= high:
            return False, f"outside the absolute limits [{low:g}, {high:g}]"
        low, high = self.userlimits
        if not low <= target <= high:
            return False, f"outside the user limits [{low:g}, {high:g}]"
        return super().isAllowed(target)


class HasOffset(Moveable):
    """A moveable whose zero can be shifted: user value = raw value - offset."""

    parameters = {
        "offset": Param("Subtracted from the raw value to give the user value",
                        type=float, default=0.0, settable=True, unit="main"),
    }

    def _raw_to_user(self, value: Any) -> Any:
        return value - self._params["offset"]

    def _user_to_raw(self, target: Any) -> Any:
        return target + self._params["offset"]

    def doWriteOffset(self, value: float) -> None:
        shift = value - self._params["offset"]
        if "userlimits" in self._params:
            # the user limits keep their physical place
            low, high = self._params["userlimits"]
            self._store_param("userlimits", (low - shift, high - shift))

    def adjust(self, value: float) -> float:
        """Redefine the current position as ``value`` by changing the offset;
        returns the new offset."""
        current = self.read()
        self.offset = self._params["offset"] + (current - value)
        return self._params["offset"]


__all__ = ["HasLimits", "HasOffset"]
