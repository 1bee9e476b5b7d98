"""The device base class: a name, declared parameters, attached devices, a life.

Parameters are attributes: ``mono.speed`` reads, ``mono.speed = 2`` checks the
value against the declaration, calls the device's ``doWriteSpeed(value)`` if it
has one (to tell the hardware) and then keeps it.  A ``doReadCurvalue()``
method makes ``mono.curvalue`` ask the device each time.

Subclasses implement the ``do...`` methods; the public methods around them do
the checking, the logging and the publishing, so that every device behaves
the same for the user.
"""

from __future__ import annotations

import difflib
import keyword
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from nicos.core.errors import ConfigurationError, InvalidValueError, ProgrammingError, UsageError
from nicos.core.params import Attach, Override, Param
from nicos.core.paramtypes import ValueTypeError, describe_value

if TYPE_CHECKING:
    from nicos.core.session import Session

user_log = logging.getLogger("nicos")


def check_device_name(name: Any) -> str:
    """Device names are Python identifiers: they become script variables."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) \
            or name.startswith("_"):
        raise ConfigurationError(
            f"{name!r} cannot be a device name: use letters, digits and _, "
            "starting with a letter, and no Python keyword")
    return name


def suggestion(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'speed'?)' for a near miss, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _ParamAttribute:
    """Makes a declared parameter an attribute of the device."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, device: Device | None, owner: type) -> Any:
        if device is None:
            return self
        return device._get_param(self.name)

    def __set__(self, device: Device, value: Any) -> None:
        device._set_param(self.name, value)


class _DeviceLog(logging.LoggerAdapter):
    """Messages of a device go to the user log, prefixed with its name."""

    def process(self, msg: Any, kwargs: Any) -> tuple[str, Any]:
        return f"{self.extra['device']}: {msg}", kwargs


def _capitalized(name: str) -> str:
    return name[:1].upper() + name[1:]


class Device:
    """Base of all devices.

    Create devices through setups (the session does it).  In code and tests:
    ``VirtualMotor('mono', session, abslimits=(0, 10), speed=1)``, attached
    devices given as device objects.
    """

    parameters: ClassVar[dict[str, Param]] = {
        "description": Param("What this device is, in a few words", type=str, default=""),
    }
    parameter_overrides: ClassVar[dict[str, Override]] = {}
    attached_devices: ClassVar[dict[str, Attach]] = {}

    # the merged declarations of the class and its bases (built per class)
    all_parameters: ClassVar[dict[str, Param]] = {}
    all_attached: ClassVar[dict[str, Attach]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _collect_declarations(cls)

    def __init__(self, name: str, session: Session, **config: Any) -> None:
        self._name = check_device_name(name)
        self._session = session
        self._params: dict[str, Any] = {}
        self._attached: dict[str, Any] = {}
        self._is_shut_down = False
        self.log = _DeviceLog(user_log, {"device": name})
        given = self._take_config(config)
        self._validate_config(given)
        self.doInit()
        if callable(getattr(self, "stop", None)):
            # anything that can move or count is stopped by an emergency stop
            session.register_emergency_stop(self.stop)

    # ------------------------------------------------------------ identity

    @property
    def name(self) -> str:
        return self._name

    @property
    def session(self) -> Session:
        return self._session

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name}>"

    # ------------------------------------------------------- configuration

    def _take_config(self, config: Mapping[str, Any]) -> set[str]:
        """Check and store the setup's values; returns the names given."""
        declared = type(self).all_parameters
        attachable = type(self).all_attached
        for key in config:
            if key in attachable:
                continue
            if key not in declared:
                known = [*declared, *attachable]
                raise ConfigurationError(
                    f"{self}: unknown parameter '{key}'{suggestion(key, known)}")
            if declared[key].internal:
                raise ConfigurationError(
                    f"{self}: parameter '{key}' is kept by the device itself "
                    "and cannot be configured")
        missing = [n for n, p in declared.items() if p.mandatory and n not in config]
        missing += [n for n, a in attachable.items() if not a.optional and n not in config]
        if missing:
            names = ", ".join(f"'{n}'" for n in missing)
            raise ConfigurationError(f"{self}: {names} must be given in the setup")
        for key, param in declared.items():
            if key in config:
                self._params[key] = self._converted(key, config[key], ConfigurationError)
            else:
                try:
                    self._params[key] = param.kind.convert(param.initial_value())
                except ValueTypeError as err:
                    raise ProgrammingError(
                        f"{type(self).__name__}: default of parameter '{key}' {err}") from None
        for key, attach in attachable.items():
            self._attached[key] = self._check_attached(key, attach, config.get(key))
        return {k for k in config if k in declared}

    def _check_attached(self, key: str, attach: Attach, value: Any) -> Any:
        if value is None:
            if attach.multiple:
                return []
            return None
        if attach.multiple and not isinstance(value, (list, tuple)):
            raise ConfigurationError(f"{self}: '{key}' must be a list of devices")
        items = value if attach.multiple else [value]
        for item in items:
            if not isinstance(item, attach.kind):
                raise ConfigurationError(
                    f"{self}: '{key}' must be {_kind_phrase(attach.kind)}, "
                    f"got {describe_value(item)}")
        return list(items) if attach.multiple else value

    def _validate_config(self, given: set[str]) -> None:
        """Checks involving several parameters, after all are set.  Mixins
        extend this (and call super()); ``given``: names set in the setup."""

    def _converted(self, key: str, value: Any, error: type[Exception]) -> Any:
        try:
            return type(self).all_parameters[key].kind.convert(value)
        except ValueTypeError as err:
            raise error(f"{self}: parameter '{key}' {err}, got {describe_value(value)}") \
                from None

    def _attached_device(self, key: str) -> Any:
        """The device (or list of devices) attached under ``key``."""
        return self._attached[key]

    # ---------------------------------------------------------- parameters

    def _get_param(self, name: str) -> Any:
        reader = getattr(self, f"doRead{_capitalized(name)}", None)
        if reader is not None:
            value = reader()
            self._store_param(name, value)
            return value
        return self._params[name]

    def _set_param(self, name: str, value: Any) -> None:
        if not type(self).all_parameters[name].settable:
            raise UsageError(f"{self}: parameter '{name}' cannot be changed at run time")
        value = self._converted(name, value, InvalidValueError)
        writer = getattr(self, f"doWrite{_capitalized(name)}", None)
        if writer is not None:
            replaced = writer(value)
            if replaced is not None:
                value = replaced
        self._store_param(name, value)

    def _store_param(self, name: str, value: Any) -> None:
        """Keep a parameter value without the settable check: for the device's
        own bookkeeping (``target``, internal state)."""
        self._params[name] = value
        self._session.publish(self._name, name, value)

    def parameter_table(self) -> list[tuple[str, Any, str, str]]:
        """(name, value, unit, description) of every parameter, for help()."""
        rows = []
        unit = self._params.get("unit", "")
        for name, param in sorted(type(self).all_parameters.items()):
            shown_unit = unit if param.unit == "main" else (param.unit or "")
            rows.append((name, self._params[name], shown_unit, param.description))
        return rows

    # ------------------------------------------------------------- lifetime

    def doInit(self) -> None:
        """Connect to the hardware, start threads; parameters are set."""

    def doShutdown(self) -> None:
        """Release the hardware, end threads."""

    def shutdown(self) -> None:
        """End the device's life (called by the session when its setup goes)."""
        if self._is_shut_down:
            return
        self._is_shut_down = True
        if callable(getattr(self, "stop", None)):
            self._session.unregister_emergency_stop(self.stop)
        self.doShutdown()


def _kind_phrase(kind: type) -> str:
    article = "an" if kind.__name__[:1].lower() in "aeiou" else "a"
    return f"{article} {kind.__name__} device"


def _collect_declarations(cls: type[Device]) -> None:
    params: dict[str, Param] = {}
    attached: dict[str, Attach] = {}
    for klass in reversed(cls.__mro__):
        own = vars(klass)
        params.update(own.get("parameters", {}))
        for name, override in own.get("parameter_overrides", {}).items():
            if name not in params:
                raise ProgrammingError(f"{klass.__name__}: override of unknown parameter '{name}'")
            params[name] = override.apply(params[name])
        attached.update(own.get("attached_devices", {}))
    cls.all_parameters = params
    cls.all_attached = attached
    for name in params:
        if not isinstance(getattr(cls, name, None), _ParamAttribute):
            if name in vars(cls) or any(name in vars(k) for k in cls.__mro__[1:]
                                        if k is not object):
                raise ProgrammingError(f"{cls.__name__}: parameter '{name}' "
                                       "clashes with an attribute of the same name")
            setattr(cls, name, _ParamAttribute(name))


_collect_declarations(Device)

__all__ = ["Device", "check_device_name", "suggestion"]
