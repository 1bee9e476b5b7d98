"""Device classes of the reflectometer."""

from __future__ import annotations

from nicos.core import (
    BUSY,
    ERROR,
    OK,
    Attach,
    HasLimits,
    Moveable,
    Override,
    Param,
    Status,
    floatrange,
)


class Slit(Moveable):
    """A slit of two blades; its value is the opening, kept centred on ``center``.

    Moving the slit moves both blades at once; the blades' own limits decide
    what opening is possible.
    """

    attached_devices = {
        "left": Attach("The blade on the negative side", HasLimits),
        "right": Attach("The blade on the positive side", HasLimits),
    }
    parameters = {
        "center": Param("Middle of the opening, in blade coordinates", type=float,
                        default=0.0, settable=True, unit="main"),
    }
    parameter_overrides = {
        "unit": Override(default="mm"),
        "fmtstr": Override(default="%.2f"),
    }
    valuetype = floatrange(0)

    def _blade_targets(self, opening: float) -> tuple[float, float]:
        center = self._params["center"]
        return center - opening / 2, center + opening / 2

    def doIsAllowed(self, target: float) -> tuple[bool, str]:
        for blade, position in zip(self._blades(), self._blade_targets(target), strict=True):
            allowed, why = blade.isAllowed(position)
            if not allowed:
                return False, f"blade {blade} would be {why}"
        return True, ""

    def doStart(self, target: float) -> None:
        for blade, position in zip(self._blades(), self._blade_targets(target), strict=True):
            blade.start(position)

    def doStop(self) -> None:
        for blade in self._blades():
            blade.stop()

    def doRead(self) -> float:
        left, right = self._blades()
        return right.read() - left.read()

    def doStatus(self) -> Status:
        statuses = [blade.status() for blade in self._blades()]
        for code in (ERROR, BUSY):
            texts = [f"{b}: {t}" for b, (c, t) in zip(self._blades(), statuses, strict=True)
                     if c == code]
            if texts:
                return code, "; ".join(texts)
        return OK, "idle"

    def _blades(self) -> tuple[HasLimits, HasLimits]:
        return self._attached_device("left"), self._attached_device("right")
