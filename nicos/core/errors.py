"""The errors of the instrument layer.

Every error a user can meet derives from NicosError, so a script can catch
"anything the instrument refused" with one ``except NicosError`` while real
bugs (TypeError, AttributeError, ...) still surface as such.  Messages are
written for the user: they name the device, the parameter or the setup file
and say what would have been right.
"""

from __future__ import annotations


class NicosError(Exception):
    """Base of all errors raised by devices, setups and user commands."""

    category = "Error"


class ConfigurationError(NicosError):
    """A setup file or a device configuration is wrong; nothing was changed."""

    category = "Configuration error"


class UsageError(NicosError):
    """A command or device was used the wrong way (wrong arguments, ...)."""

    category = "Usage error"


class InvalidValueError(NicosError):
    """A value (parameter or target) does not fit its declared type or range."""

    category = "Invalid value"


class LimitError(InvalidValueError):
    """A target lies outside the limits; raised before any motion starts."""

    category = "Out of limits"


class CommunicationError(NicosError):
    """The (possibly virtual) hardware did not answer or answered nonsense."""

    category = "Communication error"


class NicosTimeoutError(NicosError):
    """A device did not reach its target in the allowed time."""

    category = "Timeout"


# The builtin TimeoutError is an OSError; within the instrument layer this name
# means ours, so ``from nicos.core import TimeoutError`` reads naturally.
TimeoutError = NicosTimeoutError


class MoveError(NicosError):
    """A movement was refused by the hardware or failed on the way."""

    category = "Move error"


class PositionError(NicosError):
    """A device cannot tell where it is."""

    category = "Position error"


class ProgrammingError(NicosError):
    """Device or command code is wrong (a bug, not a user mistake)."""

    category = "Programming error"


__all__ = [
    "CommunicationError", "ConfigurationError", "InvalidValueError", "LimitError",
    "MoveError", "NicosError", "NicosTimeoutError", "PositionError", "ProgrammingError",
    "TimeoutError", "UsageError",
]
