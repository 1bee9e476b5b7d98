"""A peak for virtual detectors to see.

A counter or image attached to a motor counts more when the motor is near
``peak_center``: a Gaussian of width ``peak_width`` over a flat
``background`` (both relative to the rate at the top of the peak), so that
a scan of that motor shows a peak where the setup says it is.
"""

from __future__ import annotations

import math

from nicos.core import Attach, Device, NicosError, Param, Readable, floatrange


class FollowsPeak(Device):
    """Mixin: intensity depending on the position of an attached motor."""

    attached_devices = {
        "motor": Attach("Device whose position sets the intensity (none: constant)",
                        Readable, optional=True),
    }
    parameters = {
        "peak_center": Param("Motor position of the peak's top", type=float, default=0.0,
                             settable=True),
        "peak_width": Param("Standard deviation of the peak, in motor units",
                            type=floatrange(1e-9), default=1.0, settable=True),
        "background": Param("Flat background, relative to the top of the peak",
                            type=floatrange(0), default=0.02, settable=True),
    }

    def _peak_weights(self) -> tuple[float, float]:
        """(peak part, background part) of the intensity, the top of the
        peak without background being 1."""
        motor = self._attached_device("motor")
        if motor is None:
            return 1.0, 0.0
        try:
            position = float(motor.read())
        except (NicosError, TypeError, ValueError):
            return 0.0, self._params["background"]  # no beam on an unknown position
        distance = (position - self._params["peak_center"]) / self._params["peak_width"]
        return math.exp(-0.5 * distance * distance), self._params["background"]


__all__ = ["FollowsPeak"]
