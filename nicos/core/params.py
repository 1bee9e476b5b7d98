"""Declarations of device parameters and attached devices.

A device class lists its parameters in a class attribute ``parameters``
(name -> Param); subclasses add to the inherited ones and can change single
fields of an inherited declaration with ``parameter_overrides``
(name -> Override(...)).  Devices that work with other devices (a detector
with its channels, a coder reading a motor) name them in
``attached_devices`` (name -> Attach(...)); setups then give device names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from nicos.core.paramtypes import ParamType, as_type


class _NoDefault:
    def __repr__(self) -> str:
        return "<no default>"


NO_DEFAULT: Any = _NoDefault()


@dataclasses.dataclass(frozen=True)
class Param:
    """One declared parameter.

    ``type`` converts and checks values (see paramtypes).  ``mandatory``
    parameters must be given in the setup.  ``settable`` ones may be changed
    at run time (``mono.speed = 2``).  ``internal`` ones are kept by the
    device itself and may not appear in setups.  ``unit`` may be ``'main'``:
    the device's own unit.
    """

    description: str
    type: ParamType | Callable[[Any], Any] | None = float
    default: Any = NO_DEFAULT
    mandatory: bool = False
    unit: str | None = None
    settable: bool = False
    internal: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", as_type(self.type))
        if self.mandatory and self.default is not NO_DEFAULT:
            raise ValueError("a mandatory parameter cannot have a default")
        if self.mandatory and self.internal:
            raise ValueError("an internal parameter cannot be mandatory")

    @property
    def kind(self) -> ParamType:
        return self.type  # type: ignore[return-value]  # __post_init__ made it one

    def initial_value(self) -> Any:
        """The value used when the setup gives none."""
        if self.default is NO_DEFAULT:
            return self.kind.zero
        return self.default


class Override:
    """Changes single fields of an inherited Param: ``Override(default=2.0)``."""

    def __init__(self, **changes: Any) -> None:
        unknown = set(changes) - {f.name for f in dataclasses.fields(Param)}
        if unknown:
            raise TypeError(f"Override() got unknown fields {sorted(unknown)}")
        self.changes = changes

    def apply(self, param: Param) -> Param:
        changes = dict(self.changes)
        if changes.get("mandatory"):
            changes.setdefault("default", NO_DEFAULT)
        elif "default" in changes:
            changes.setdefault("mandatory", False)
        return dataclasses.replace(param, **changes)


@dataclasses.dataclass(frozen=True)
class Attach:
    """A device this device works with, given by name in the setup.

    ``multiple``: the setup gives a list of names (possibly empty when
    ``optional``).  ``kind``: the class the attached device must be.
    """

    description: str
    kind: type
    multiple: bool = False
    optional: bool = False


__all__ = ["Attach", "NO_DEFAULT", "Override", "Param"]
