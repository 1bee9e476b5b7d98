"""The instrument model: devices with declared parameters, setups, the session.

Device and command code imports what it needs from here::

    from nicos.core import Moveable, HasLimits, Param, floatrange, MoveError

Nothing here imports the daemon; the session talks to it through the
``DaemonHooks`` object it is given.
"""

from nicos.core.clock import Clock, ManualClock, RealClock
from nicos.core.device import Device
from nicos.core.errors import (
    CommunicationError,
    ConfigurationError,
    InvalidValueError,
    LimitError,
    MoveError,
    NicosError,
    NicosTimeoutError,
    PositionError,
    ProgrammingError,
    TimeoutError,
    UsageError,
)
from nicos.core.hooks import DaemonHooks
from nicos.core.measurable import Channel, Measurable
from nicos.core.mixins import HasLimits, HasOffset
from nicos.core.params import Attach, Override, Param
from nicos.core.paramtypes import (
    ParamType,
    ValueTypeError,
    anytype,
    boolean,
    floatrange,
    intrange,
    limits,
    listof,
    none_or,
    nonemptystring,
    oneof,
    string,
    tupleof,
)
from nicos.core.readable import Moveable, Readable
from nicos.core.session import Session
from nicos.core.status import BUSY, DISABLED, ERROR, NOTREACHED, OK, UNKNOWN, WARN, Status
from nicos.core.usercommand import usercommand
from nicos.core.waiting import wait_for_devices

__all__ = [
    "BUSY", "DISABLED", "ERROR", "NOTREACHED", "OK", "UNKNOWN", "WARN",
    "Attach", "Channel", "Clock", "CommunicationError", "ConfigurationError", "DaemonHooks",
    "Device", "HasLimits", "HasOffset", "InvalidValueError", "LimitError", "ManualClock",
    "Measurable", "MoveError", "Moveable", "NicosError", "NicosTimeoutError", "Override",
    "Param", "ParamType", "PositionError", "ProgrammingError", "Readable", "RealClock",
    "Session", "Status", "TimeoutError", "UsageError", "ValueTypeError", "anytype", "boolean",
    "floatrange", "intrange", "limits", "listof", "none_or", "nonemptystring", "oneof",
    "string", "tupleof", "usercommand", "wait_for_devices",
]
