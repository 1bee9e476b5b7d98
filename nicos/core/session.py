"""The session: the devices, the loaded setups and the script namespace.

One session serves one instrument.  It loads setups (creating their
devices), exports devices and user commands into the script namespace,
keeps the latest value of every device key (and tells the daemon about
changes as ``cache`` events), and stops everything on an emergency stop.

Changing setups is all or nothing: setup files are read and checked,
and all new devices are created, before anything of the old state is
touched; on any error the new devices are shut down again and the
session is as it was.  Only then are devices that are no longer wanted
shut down and the namespace updated.  Startup code of newly loaded
setups runs last; if it fails the setup stays loaded and the error is
raised.

The daemon is reached only through ``hooks`` (see hooks.py).  Scan data
go to ``datadir`` (see nicos.data); a session made with ``dry_run=True``
runs scripts without moving anything (see dryrun.py).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from nicos.core.clock import Clock, RealClock
from nicos.core.device import Device, suggestion
from nicos.core.devicefactory import DeviceBuilder, import_device_class
from nicos.core.dryrun import DryRun
from nicos.core.errors import ConfigurationError, NicosError, UsageError
from nicos.core.hooks import DaemonHooks
from nicos.core.paths import make_facility_code_importable, setup_search_path
from nicos.core.setupcatalog import SetupCatalog
from nicos.core.setupfile import DeviceConfig, SetupInfo
from nicos.core.usercommand import bind_command, commands_in
from nicos.data.manager import DataManager

log = logging.getLogger("nicos")

STANDARD_COMMAND_MODULES = (
    "nicos.commands.basic",
    "nicos.commands.device",
    "nicos.commands.setups",
    "nicos.commands.scan",
)

ValueListener = Callable[[float, str, Any], None]


class Session:
    """Devices, setups and script namespace of one instrument."""

    def __init__(self, setup_paths: Sequence[Path] | None = None, *,
                 hooks: DaemonHooks | None = None, clock: Clock | None = None,
                 namespace: dict[str, Any] | None = None,
                 command_modules: Sequence[str] = STANDARD_COMMAND_MODULES,
                 datadir: Path | None = None, dry_run: bool = False) -> None:
        make_facility_code_importable()
        self.hooks = hooks if hooks is not None else DaemonHooks()
        self.clock: Clock = clock if clock is not None else RealClock()
        # where scan files go (None: nowhere, data stay in memory)
        self.datadir = Path(datadir) if datadir is not None else None
        self.data = DataManager(self.hooks.emit, self.datadir)
        # in a dry run nothing moves or counts (see dryrun.py)
        self.dry_run: DryRun | None = DryRun(self) if dry_run else None
        self.catalog = SetupCatalog(setup_paths if setup_paths is not None
                                    else setup_search_path())
        self.namespace: dict[str, Any] = namespace if namespace is not None else {}
        self.devices: dict[str, Device] = {}
        self.explicit_setups: list[str] = []
        self.loaded_setups: list[str] = []
        self.setup_infos: dict[str, SetupInfo] = {}
        self.commands: dict[str, Callable[..., Any]] = {}

        self._standard_modules = tuple(command_modules)
        self._configs: dict[str, DeviceConfig] = {}
        self._lock = threading.RLock()
        self._emergency_lock = threading.Lock()
        self._emergency_functions: list[Callable[[], None]] = []
        self._values_lock = threading.Lock()
        self._values: dict[str, tuple[float, Any]] = {}
        self._value_listeners: list[ValueListener] = []

        self._export_commands(self._load_commands(()))
        # one function for all devices: devices come and go with setups,
        # the daemon's list of emergency functions only grows
        self.hooks.register_emergency_stop(self.emergency_stop)

    # ------------------------------------------------------------ devices

    def getDevice(self, name: str | Device, cls: type | None = None) -> Any:
        """The device called ``name`` (a device is returned as it is);
        ``cls``: the device must be one of these."""
        device = name if isinstance(name, Device) else self.devices.get(str(name))
        if device is None:
            raise UsageError(f"no device named '{name}'{suggestion(str(name), self.devices)}")
        if cls is not None and not isinstance(device, cls):
            raise UsageError(f"{device} is not a {getattr(cls, '__name__', cls)} device")
        return device

    # ------------------------------------------------------------- setups

    def load_setup(self, *names: str, replace: bool = False) -> None:
        """Load setups ``names`` with their includes.  ``replace``: drop all
        other setups and create every device anew (NewSetup); otherwise add
        to the loaded ones, keeping existing devices (AddSetup)."""
        with self._lock:
            if replace:
                explicit = list(dict.fromkeys(names))
            else:
                explicit = self.explicit_setups + [n for n in dict.fromkeys(names)
                                                   if n not in self.explicit_setups]
            self._change_setups(explicit, recreate_all=replace)

    def unload_setup(self, *names: str) -> None:
        """Unload setups that were loaded explicitly, with their devices."""
        with self._lock:
            for name in names:
                if name not in self.explicit_setups:
                    raise UsageError(self._why_not_unloadable(name))
            explicit = [n for n in self.explicit_setups if n not in names]
            self._change_setups(explicit, recreate_all=False)

    def reload_setups(self) -> None:
        """Load the current setups again from their files, all devices anew."""
        self.load_setup(*self.explicit_setups, replace=True)

    def available_setups(self) -> list[tuple[str, SetupInfo | ConfigurationError]]:
        """Every setup on the search path (or why it cannot be read)."""
        return self.catalog.describe_all()

    def _why_not_unloadable(self, name: str) -> str:
        if name in self.loaded_setups:
            by = [s for s in self.loaded_setups if name in self.setup_infos[s].includes]
            return (f"setup '{name}' was not loaded by itself but included by "
                    f"{', '.join(repr(b) for b in by)}; remove that instead")
        return f"setup '{name}' is not loaded{suggestion(name, self.explicit_setups)}"

    def _change_setups(self, explicit: list[str], recreate_all: bool) -> None:
        infos = self.catalog.resolve(explicit)
        configs = _merged_devices(infos)
        commands = self._load_commands(infos)
        for name, config in configs.items():
            if name in commands:
                raise ConfigurationError(f"{config.where()}: a device cannot be called "
                                         f"'{name}', that is the name of a command")
        keep = {} if recreate_all else self._devices_to_keep(configs)
        builder = DeviceBuilder(self, {n: c for n, c in configs.items() if n not in keep},
                                keep)
        try:
            created = builder.build_all()
        except BaseException:
            builder.discard()
            raise
        previously_loaded = set() if recreate_all else set(self.loaded_setups)
        self._commit(infos, configs, {**keep, **created}, explicit)
        self._export_commands(commands)
        for info in infos:
            if info.name not in previously_loaded and info.startupcode.strip():
                self._run_startupcode(info)

    def _devices_to_keep(self, configs: dict[str, DeviceConfig]) -> dict[str, Device]:
        keep = {n: d for n, d in self.devices.items()
                if n in configs and self._configs[n].same_as(configs[n])}
        # a device attached to one that is recreated must be recreated too
        changed = True
        while changed:
            changed = False
            for name in list(keep):
                if any(ref not in keep for ref in _attached_names(configs[name])):
                    del keep[name]
                    changed = True
        return keep

    def _commit(self, infos: list[SetupInfo], configs: dict[str, DeviceConfig],
                devices: dict[str, Device], explicit: list[str]) -> None:
        old = self.devices
        gone = [d for n, d in old.items() if devices.get(n) is not d]
        self.devices = {name: devices[name] for name in configs}
        self._configs = configs
        self.setup_infos = {info.name: info for info in infos}
        self.loaded_setups = [info.name for info in infos]
        self.explicit_setups = list(explicit)
        for device in reversed(gone):
            try:
                device.shutdown()
            except Exception as err:  # noqa: BLE001 - the others must still go
                log.error("%s: error while shutting down: %s", device, err)
            if self.namespace.get(device.name) is device:
                del self.namespace[device.name]
        new = [n for n, d in self.devices.items() if old.get(n) is not d]
        self.namespace.update(self.devices)
        if gone:
            self.hooks.emit("device", ["destroy", [d.name for d in gone]])
        if new:
            self.hooks.emit("device", ["create", new])
        self.hooks.emit("setup", [list(self.loaded_setups), list(self.explicit_setups)])

    def _run_startupcode(self, info: SetupInfo) -> None:
        try:
            code = compile(info.startupcode, f"<startupcode of {info.path}>", "exec")
            exec(code, self.namespace)
        except Exception as err:  # noqa: BLE001 - reported with the setup's name
            raise ConfigurationError(f"{info.path}: startupcode failed: "
                                     f"{type(err).__name__}: {err}") from err

    # ------------------------------------------------------------ commands

    def _load_commands(self, infos: Iterable[SetupInfo]) -> dict[str, Callable[..., Any]]:
        modules = list(self._standard_modules)
        for info in infos:
            modules += [m for m in info.modules if m not in modules]
        found: dict[str, Callable[..., Any]] = {}
        for module_name in modules:
            try:
                module = importlib.import_module(module_name)
            except ImportError as err:
                raise ConfigurationError(f"cannot import command module "
                                         f"'{module_name}': {err}") from None
            found.update(commands_in(module))
        return found

    def _export_commands(self, commands: dict[str, Callable[..., Any]]) -> None:
        for name, bound in self.commands.items():
            if name not in commands and self.namespace.get(name) is bound:
                del self.namespace[name]
        self.commands = {name: (self.commands[name]
                                if name in self.commands and
                                self.commands[name].__wrapped__ is func  # type: ignore[attr-defined]
                                else bind_command(func, self))
                         for name, func in commands.items()}
        self.namespace.update(self.commands)

    # ------------------------------------------------------------- values

    def publish(self, device: str, key: str, value: Any) -> None:
        """A device value or parameter changed: remember it, tell listeners
        and clients (``cache`` event ``[time, 'dev/key', '=', repr]``)."""
        if _is_array(value):
            return  # images are data, not cache values
        cachekey = f"{device.lower()}/{key.lower()}"
        with self._values_lock:
            previous = self._values.get(cachekey)
            if previous is not None and _same(previous[1], value):
                return
            now = time.time()
            self._values[cachekey] = (now, value)
        for listener in list(self._value_listeners):
            try:
                listener(now, cachekey, value)
            except Exception as err:  # noqa: BLE001 - a listener must not break devices
                logging.getLogger("nicos.core.session").error("value listener failed: %s", err)
        self.hooks.emit("cache", [now, cachekey, "=", repr(value)])

    def current_values(self) -> dict[str, tuple[float, Any]]:
        """Latest ``(time, value)`` of every published key."""
        with self._values_lock:
            return dict(self._values)

    def add_value_listener(self, listener: ValueListener) -> None:
        """Call ``listener(time, key, value)`` on every change (value history)."""
        self._value_listeners.append(listener)

    # ------------------------------------------------------ emergency stop

    def register_emergency_stop(self, func: Callable[[], None]) -> None:
        with self._emergency_lock:
            self._emergency_functions.append(func)

    def unregister_emergency_stop(self, func: Callable[[], None]) -> None:
        with self._emergency_lock:
            if func in self._emergency_functions:
                self._emergency_functions.remove(func)

    def emergency_stop(self) -> None:
        """Stop every device that can move or count, from any thread.  Every
        device is tried; failures are logged and reported together."""
        with self._emergency_lock:
            functions = list(self._emergency_functions)
        failed = []
        for func in functions:
            try:
                func()
            except Exception as err:  # noqa: BLE001 - the others must still be stopped
                owner = getattr(func, "__self__", func)
                failed.append(f"{owner}: {err}")
                log.error("emergency stop of %s failed: %s", owner, err)
        if failed:
            raise NicosError(f"{len(failed)} device(s) could not be stopped: "
                             + "; ".join(failed))

    # ------------------------------------------------------------ shutdown

    def shutdown(self) -> None:
        """Shut down all devices and remove what the session exported."""
        with self._lock:
            self._commit([], {}, {}, [])
            self._export_commands({})


def _merged_devices(infos: list[SetupInfo]) -> dict[str, DeviceConfig]:
    configs: dict[str, DeviceConfig] = {}
    for info in infos:
        for name, config in info.devices.items():
            if name in configs:
                raise ConfigurationError(
                    f"{config.where()}: device '{name}' is already defined in "
                    f"{configs[name].where()}")
            configs[name] = config
    return configs


def _attached_names(config: DeviceConfig) -> list[str]:
    try:
        cls = import_device_class(config.classname)
    except ConfigurationError:
        return []
    names: list[str] = []
    for key in cls.all_attached:
        value = config.params.get(key)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str):
                names.append(item)
    return names


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # noqa: BLE001 - exotic values compare as different
        return False


__all__ = ["STANDARD_COMMAND_MODULES", "Session"]
