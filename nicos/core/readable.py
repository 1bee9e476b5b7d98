"""Devices with a value (Readable) and devices that can be moved (Moveable).

Moving is a fixed sequence, the same for every device: convert the target
to the device's value type, ask ``isAllowed`` (limits and the device's own
rules), and only then tell the hardware (``doStart``).  A refused target
therefore never moves anything.
"""

from __future__ import annotations

from typing import Any, ClassVar

from nicos.core.device import Device
from nicos.core.errors import InvalidValueError, LimitError, MoveError, NicosError
from nicos.core.params import Param
from nicos.core.paramtypes import ParamType, ValueTypeError, anytype, describe_value, floatrange
from nicos.core.status import OK, Status, status_name


class Readable(Device):
    """A device with a value and a status."""

    parameters = {
        "unit": Param("Unit of the value", type=str, default=""),
        "fmtstr": Param("%-format of the value for people", type=str, default="%.3f",
                        settable=True),
    }

    # ---------------------------------------------------------------- public

    def read(self, maxage: float | None = None) -> Any:
        """The current value (``maxage`` is accepted for compatibility; values
        are always fresh from the device)."""
        dry_run = self._session.dry_run
        value = dry_run.read(self) if dry_run is not None else self._raw_to_user(self.doRead())
        self._session.publish(self._name, "value", value)
        return value

    def status(self, maxage: float | None = None) -> Status:
        """``(code, text)``: OK, BUSY, WARN, ERROR, UNKNOWN and what it means."""
        dry_run = self._session.dry_run
        code, text = dry_run.status(self) if dry_run is not None else self.doStatus()
        status = (int(code), str(text))
        self._session.publish(self._name, "status", status)
        return status

    def poll(self) -> tuple[Status, Any]:
        """Status and value at once (for a poller or a status display)."""
        return self.status(), self.read()

    def reset(self) -> Status:
        """Clear an error state, if the device can; returns the new status."""
        self.doReset()
        return self.status()

    def format(self, value: Any, unit: bool = False) -> str:
        """The value as people read it: ``'2.500 A'``."""
        try:
            text = self.fmtstr % value
        except (TypeError, ValueError):
            text = str(value)
        return f"{text} {self.unit}".rstrip() if unit else text

    def failure_for(self, status: Status) -> NicosError:
        """The error a wait raises when this device ends in a failed state."""
        code, text = status
        return MoveError(f"{self}: {text or status_name(code)}")

    # ---------------------------------------------------- for subclasses

    def doRead(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement doRead()")

    def _simulated_value(self) -> Any:
        """The value in a dry run while nothing has set it (see dryrun.py):
        by default read from the device, which suits virtual devices."""
        return self._raw_to_user(self.doRead())

    def doStatus(self) -> Status:
        return (OK, "")

    def doReset(self) -> None:
        pass

    def _raw_to_user(self, value: Any) -> Any:
        """Hardware value to user value (offset devices override this)."""
        return value


class Moveable(Readable):
    """A device that can be told to go somewhere: motors, temperatures, switches."""

    parameters = {
        "target": Param("Last target given to start()", type=anytype, default=None,
                        internal=True),
    }

    # what a target must be; subclasses with other values (names, pairs) change it
    valuetype: ClassVar[ParamType] = floatrange()

    def start(self, target: Any) -> None:
        """Begin moving to ``target`` and return at once; refuses (with
        InvalidValueError or LimitError) before anything moves."""
        target = self.check_target(target)
        self._store_param("target", target)
        dry_run = self._session.dry_run
        if dry_run is not None:
            dry_run.start(self, target)
            self.read()  # tell listeners where it is now
        else:
            self.doStart(self._user_to_raw(target))

    move = start

    def check_target(self, target: Any) -> Any:
        """Convert ``target`` and check it is allowed; raises if not.  Called
        by ``start`` and by commands that check all targets before moving any."""
        try:
            target = self.valuetype.convert(target)
        except ValueTypeError as err:
            raise InvalidValueError(f"{self}: target {err}, got {describe_value(target)}") \
                from None
        allowed, why = self.isAllowed(target)
        if not allowed:
            raise LimitError(f"{self}: cannot move to {self.format(target, unit=True)}: {why}")
        return target

    def isAllowed(self, target: Any) -> tuple[bool, str]:
        """``(True, '')`` or ``(False, reason)``; limits and device rules."""
        return self.doIsAllowed(target)

    def wait(self) -> Any:
        """Wait until the device is no longer busy; returns the value reached.
        Raises when the device ends in an error state."""
        from nicos.core.waiting import wait_for_devices  # waiting imports this module

        wait_for_devices(self._session, [self])
        return self.read()

    def maw(self, target: Any) -> Any:
        """Move and wait; returns the value reached."""
        self.start(target)
        return self.wait()

    def stop(self) -> None:
        """Stop moving now; harmless when not moving.  May be called from any
        thread (emergency stop)."""
        dry_run = self._session.dry_run
        if dry_run is not None:
            dry_run.stop(self)
        else:
            self.doStop()

    def estimate_time(self, old: Any, new: Any) -> float:
        """Seconds a move from ``old`` to ``new`` (user values) would take;
        0 when the device cannot tell.  Used by dry runs."""
        try:
            seconds = float(self.doEstimateTime(self._user_to_raw(old), self._user_to_raw(new)))
        except Exception:  # noqa: BLE001 - an estimate must never break a dry run
            return 0.0
        return seconds if seconds > 0 and seconds != float("inf") else 0.0

    # ---------------------------------------------------- for subclasses

    def doStart(self, target: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement doStart()")

    def doStop(self) -> None:
        pass

    def doIsAllowed(self, target: Any) -> tuple[bool, str]:
        return True, ""

    def doEstimateTime(self, old: Any, new: Any) -> float:
        """Seconds to move from raw value ``old`` to ``new``."""
        return 0.0

    def _user_to_raw(self, target: Any) -> Any:
        """User target to hardware target (offset devices override this)."""
        return target


__all__ = ["Moveable", "Readable"]
