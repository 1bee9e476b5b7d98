"""A virtual 2-D area detector.

The beam makes a round spot in the middle of the image whose brightness
follows the peak model (see peak.py) over a flat background; every pixel
counts as a Poisson process.  ``read()`` gives the total counts,
``read_array()`` the image (a numpy array of shape ``shape``).
"""

from __future__ import annotations

import numpy

from nicos.core import Override, Param, floatrange, intrange, tupleof
from nicos.devices.generic.channels import VirtualChannel
from nicos.devices.generic.peak import FollowsPeak


class VirtualImage(FollowsPeak, VirtualChannel):
    """An area detector producing numpy images with Poisson noise."""

    parameters = {
        "shape": Param("Pixels (rows, columns)",
                       type=tupleof(intrange(1, 4096), intrange(1, 4096)), default=(64, 64)),
        "countrate": Param("Counts per second on the whole image at the top of the peak",
                           type=floatrange(0), default=10000.0, settable=True),
        "spot_width": Param("Standard deviation of the beam spot, in pixels",
                            type=floatrange(0.1), default=4.0),
    }
    parameter_overrides = {
        "unit": Override(default="cts"),
        "fmtstr": Override(default="%d"),
    }

    def doInit(self) -> None:
        rows, columns = self._params["shape"]
        y, x = numpy.mgrid[0:rows, 0:columns]
        width = self._params["spot_width"]
        spot = numpy.exp(-0.5 * (((y - (rows - 1) / 2) / width) ** 2 +
                                 ((x - (columns - 1) / 2) / width) ** 2))
        # both profiles sum to 1: countrate is the rate on the whole image
        self._spot = spot / spot.sum()
        self._flat = numpy.full((rows, columns), 1.0 / (rows * columns))
        super().doInit()

    def _clear(self) -> None:
        self._image = numpy.zeros(self._params["shape"], dtype=numpy.int64)

    def _accumulate(self, since: float, until: float) -> None:
        peak, background = self._peak_weights()
        rate = self._params["countrate"] * (peak * self._spot + background * self._flat)
        before = int(self._image.sum())
        self._image += self._rng.poisson(rate * (until - since))
        self._note_preset(before, int(self._image.sum()), since, until)

    def _value(self) -> int:
        return int(self._image.sum())

    def read_array(self) -> numpy.ndarray:
        """The image counted so far (a copy)."""
        with self._lock:
            self._draw_until(self._session.clock.time())
            return self._image.copy()


__all__ = ["VirtualImage"]
