"""Failing on purpose.

Virtual devices can be told to fail (``mono.failmode = 'stall'``), so that
tests, and users learning to write scripts, can see how errors look and
how ``try``/``except NicosError`` handles them.  Each class lists its own
modes by overriding the parameter's type.
"""

from __future__ import annotations

from nicos.core import Device, Param, oneof


class CanFail(Device):
    """A device with a ``failmode`` parameter ('none': works normally)."""

    parameters = {
        "failmode": Param("Make the device fail on purpose ('none': work normally)",
                          type=oneof("none"), default="none", settable=True),
    }

    def _failing(self, mode: str) -> bool:
        return self._params["failmode"] == mode


__all__ = ["CanFail"]
