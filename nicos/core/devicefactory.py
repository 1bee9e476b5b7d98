"""Creating devices from setup descriptions.

Devices are created in the order of the setups, each after the devices it
is attached to.  Every failure becomes a ConfigurationError that starts
with the file and line of the ``device(...)`` call at fault.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nicos.core.device import Device, suggestion
from nicos.core.errors import ConfigurationError, NicosError
from nicos.core.setupfile import DeviceConfig

if TYPE_CHECKING:
    from nicos.core.session import Session


def import_device_class(classname: str) -> type[Device]:
    """The class named ``package.module.Class``; it must be a Device."""
    module_name, _, class_name = classname.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigurationError(f"cannot import module '{module_name}' of class "
                                 f"'{classname}': {err}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        public = [n for n in vars(module) if not n.startswith("_")]
        raise ConfigurationError(f"module '{module_name}' has no class "
                                 f"'{class_name}'{suggestion(class_name, public)}")
    if not (isinstance(cls, type) and issubclass(cls, Device)):
        raise ConfigurationError(f"'{classname}' is not a device class")
    return cls


class DeviceBuilder:
    """Creates the devices described by ``configs``; ``existing`` devices
    (kept from earlier setups) can be attached to."""

    def __init__(self, session: Session, configs: Mapping[str, DeviceConfig],
                 existing: Mapping[str, Device]) -> None:
        self._session = session
        self._configs = configs
        self._existing = existing
        self.created: dict[str, Device] = {}
        self._creating: list[str] = []

    def build_all(self) -> dict[str, Device]:
        for name in self._configs:
            self.device(name)
        return self.created

    def device(self, name: str, wanted_by: DeviceConfig | None = None) -> Device:
        if name in self.created:
            return self.created[name]
        if name in self._existing:
            return self._existing[name]
        if name not in self._configs:
            known = [*self._configs, *self._existing]
            where = f"{wanted_by.where()}: " if wanted_by else ""
            raise ConfigurationError(f"{where}no device named '{name}' in the loaded "
                                     f"setups{suggestion(name, known)}")
        config = self._configs[name]
        if name in self._creating:
            loop = " -> ".join([*self._creating, name])
            raise ConfigurationError(f"{config.where()}: devices are attached in a loop: {loop}")
        self._creating.append(name)
        try:
            cls = self._class_of(name, config)
            params = self._with_attached(cls, config)
            self.created[name] = self._construct(cls, name, config, params)
        finally:
            self._creating.pop()
        return self.created[name]

    @staticmethod
    def _class_of(name: str, config: DeviceConfig) -> type[Device]:
        try:
            return import_device_class(config.classname)
        except ConfigurationError as err:
            raise ConfigurationError(f"{config.where()}: device '{name}': {err}") from None

    def _with_attached(self, cls: type[Device], config: DeviceConfig) -> dict[str, Any]:
        params = dict(config.params)
        for key, attach in cls.all_attached.items():
            if key not in params or params[key] is None:
                continue
            value = params[key]
            if attach.multiple and isinstance(value, (list, tuple)):
                params[key] = [self._attached(v, config) for v in value]
            else:
                params[key] = self._attached(value, config)
        return params

    def _attached(self, value: Any, config: DeviceConfig) -> Any:
        # setups name attached devices; anything else is left for the
        # device's own check to refuse with a clear message
        return self.device(value, config) if isinstance(value, str) else value

    def _construct(self, cls: type[Device], name: str, config: DeviceConfig,
                   params: dict[str, Any]) -> Device:
        try:
            return cls(name, self._session, **params)
        except NicosError as err:
            raise ConfigurationError(f"{config.where()}: {err}") from err
        except Exception as err:  # noqa: BLE001 - a broken device class must not break the session
            raise ConfigurationError(f"{config.where()}: device '{name}' could not be "
                                     f"created: {type(err).__name__}: {err}") from err

    def discard(self) -> None:
        """Shut down what was created (after a failure)."""
        for device in reversed(list(self.created.values())):
            try:
                device.shutdown()
            except Exception:  # noqa: BLE001 - best effort while failing anyway
                pass
        self.created.clear()


__all__ = ["DeviceBuilder", "import_device_class"]
