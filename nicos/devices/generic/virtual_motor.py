"""A virtual motor and a readback (coder) for it."""

from __future__ import annotations

from typing import Any

import numpy

from nicos.core import (
    Attach,
    CommunicationError,
    HasOffset,
    Override,
    Param,
    Readable,
    Status,
    floatrange,
    none_or,
    oneof,
)
from nicos.devices.generic.failure import CanFail
from nicos.devices.generic.ramped import RampedMoveable


class VirtualMotor(HasOffset, RampedMoveable):
    """A motor that takes its time: it moves at ``speed`` in its own thread,
    can be read while moving and stopped anywhere on the way."""

    parameters = {
        "speed": Param("Speed of motion, units per second (0: arrive at once)",
                       type=floatrange(0), default=1.0, settable=True, unit="main/s"),
    }
    parameter_overrides = {
        "unit": Override(default="deg"),
    }

    def _rate(self) -> float:
        return self._params["speed"]


class VirtualCoder(CanFail, Readable):
    """Reads the position of another device, as an encoder on a motor would,
    optionally with some noise."""

    attached_devices = {
        "motor": Attach("The device whose position is read", Readable),
    }
    parameters = {
        "noise": Param("Standard deviation of the reading noise", type=floatrange(0),
                       default=0.0, settable=True, unit="main"),
        "seed": Param("Seed of the noise (None: different every time)",
                      type=none_or(int), default=None),
    }
    parameter_overrides = {
        "failmode": Override(type=oneof("none", "communication")),
    }

    def doInit(self) -> None:
        self._rng = numpy.random.default_rng(self._params["seed"])

    def doRead(self) -> Any:
        if self._failing("communication"):
            raise CommunicationError(f"{self}: no answer from the encoder "
                                     "(failmode 'communication')")
        value = self._attached_device("motor").read()
        noise = self._params["noise"]
        return value + float(self._rng.normal(0.0, noise)) if noise else value

    def doStatus(self) -> Status:
        code, _ = self._attached_device("motor").status()
        return (code, f"reading {self._attached_device('motor')}")


__all__ = ["VirtualCoder", "VirtualMotor"]
