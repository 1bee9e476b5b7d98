"""Reading one setup file.

A setup file is Python, but meant as a description: its top-level names say
what the setup is (``description``, ``group``, ``includes``, ``excludes``,
``modules``, ``devices``, ``startupcode``).  It runs with almost no builtins
and only the helpers ``device(...)`` and ``configdata(...)``; imports,
function and class definitions and private names are refused before it runs.
That does not make a hostile file safe (setup files are trusted, written by
the instrument team) but it keeps setups declarative and turns mistakes into
messages that name the file and the line.
"""

from __future__ import annotations

import ast
import difflib
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nicos.core.errors import ConfigurationError

GROUPS = ("basic", "optional", "lowlevel", "special", "configdata")
KNOWN_KEYS = ("description", "group", "includes", "excludes", "modules", "devices",
              "startupcode")

_SAFE_BUILTINS = {
    "abs": abs, "bool": bool, "dict": dict, "enumerate": enumerate, "float": float,
    "frozenset": frozenset, "int": int, "len": len, "list": list, "max": max, "min": min,
    "range": range, "round": round, "set": set, "sorted": sorted, "str": str, "sum": sum,
    "tuple": tuple, "zip": zip,
}

_REFUSED_NODES: dict[type, str] = {
    ast.Import: "import", ast.ImportFrom: "import", ast.FunctionDef: "a function definition",
    ast.AsyncFunctionDef: "a function definition", ast.ClassDef: "a class definition",
    ast.Lambda: "lambda", ast.Global: "global", ast.Nonlocal: "nonlocal",
    ast.While: "a while loop", ast.With: "with", ast.AsyncWith: "with", ast.Try: "try",
    ast.Raise: "raise", ast.Delete: "del", ast.Await: "await", ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


@dataclass(frozen=True)
class DeviceConfig:
    """What ``device('pkg.Class', param=value)`` in a setup file says."""

    classname: str
    params: dict[str, Any]
    lineno: int
    path: Path | None = None

    def where(self) -> str:
        """'setups/demo.py, line 12' for messages."""
        return f"{self.path}, line {self.lineno}" if self.path else f"line {self.lineno}"

    def same_as(self, other: DeviceConfig) -> bool:
        return self.classname == other.classname and self.params == other.params


@dataclass(frozen=True)
class SetupInfo:
    """The content of one setup file."""

    name: str
    path: Path
    description: str = ""
    group: str = "optional"
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    devices: dict[str, DeviceConfig] = field(default_factory=dict)
    startupcode: str = ""


def device(classname: str, **params: Any) -> DeviceConfig:
    """The setup-file helper: a device of class ``classname`` with these parameters."""
    if not isinstance(classname, str) or "." not in classname:
        raise TypeError("device() needs the class as 'package.module.Class', "
                        f"got {classname!r}")
    # the line of the device(...) call, for messages about this device later
    return DeviceConfig(classname, params, sys._getframe(1).f_lineno)


ConfigDataLoader = Callable[[str], dict[str, Any]]


def read_setup(name: str, path: Path, load_other: ConfigDataLoader | None = None) -> SetupInfo:
    """Read and check the setup file ``path``; ConfigurationError names the
    file and line of any problem."""
    values = run_setup_file(path, load_other)
    return _setup_info(name, path, values)


def run_setup_file(path: Path, load_other: ConfigDataLoader | None = None) -> dict[str, Any]:
    """Execute a setup file in the restricted namespace; its top-level names."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigurationError(f"cannot read setup file {path}: {err}") from None
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as err:
        raise ConfigurationError(f"{path}, line {err.lineno}: syntax error: {err.msg}") \
            from None
    _refuse_constructs(tree, path)

    def configdata(reference: str) -> Any:
        """``configdata('othersetup.NAME')``: a value defined in another setup file."""
        setup, _, key = reference.partition(".")
        if not key or load_other is None:
            raise ValueError(f"configdata() needs 'setupname.NAME', got {reference!r}")
        values = load_other(setup)
        if key not in values:
            raise KeyError(f"setup '{setup}' defines no {key!r}")
        return values[key]

    namespace: dict[str, Any] = {"__builtins__": _SAFE_BUILTINS, "device": device,
                                 "configdata": configdata}
    try:
        exec(compile(tree, str(path), "exec"), namespace)
    except ConfigurationError:
        raise
    except Exception as err:  # noqa: BLE001 - any mistake in the file becomes a message
        line = _line_in(err, path)
        raise ConfigurationError(f"{path}, line {line}: {type(err).__name__}: {err}") \
            from None
    return {k: v for k, v in namespace.items()
            if k not in ("__builtins__", "device", "configdata")}


def _refuse_constructs(tree: ast.AST, path: Path) -> None:
    for node in ast.walk(tree):
        what = _REFUSED_NODES.get(type(node))
        if what is None and isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            what = f"the private attribute '{node.attr}'"
        if what is None and isinstance(node, ast.Name) and node.id.startswith("__"):
            what = f"the name '{node.id}'"
        if what is not None:
            raise ConfigurationError(
                f"{path}, line {getattr(node, 'lineno', '?')}: {what} is not allowed in "
                "setup files (they describe devices; put code into a module)")


def _line_in(err: BaseException, path: Path) -> int | str:
    lines = [frame.lineno for frame in traceback.extract_tb(err.__traceback__)
             if frame.filename == str(path)]
    return lines[-1] if lines else "?"


def _setup_info(name: str, path: Path, values: dict[str, Any]) -> SetupInfo:
    def problem(text: str) -> ConfigurationError:
        return ConfigurationError(f"{path}: {text}")

    for key in values:
        near = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.8)
        if key not in KNOWN_KEYS and near:
            raise problem(f"'{key}' is not a setup entry (did you mean '{near[0]}'?)")
    description = values.get("description", "")
    if not isinstance(description, str):
        raise problem("'description' must be a string")
    group = values.get("group", "optional")
    if group not in GROUPS:
        raise problem(f"'group' must be one of {', '.join(GROUPS)}, got {group!r}")
    names = {key: _names(values.get(key, ()), key, problem)
             for key in ("includes", "excludes", "modules")}
    startupcode = values.get("startupcode", "")
    if not isinstance(startupcode, str):
        raise problem("'startupcode' must be a string of Python code")
    devices = values.get("devices", {})
    if not isinstance(devices, dict):
        raise problem("'devices' must be a dict(name=device(...), ...)")
    checked: dict[str, DeviceConfig] = {}
    for devname, config in devices.items():
        if not isinstance(config, DeviceConfig):
            raise problem(f"devices['{devname}'] must be made with device('pkg.Class', ...)")
        checked[devname] = DeviceConfig(config.classname, config.params, config.lineno, path)
    return SetupInfo(name=name, path=path, description=description, group=group,
                     includes=names["includes"], excludes=names["excludes"],
                     modules=names["modules"], devices=checked, startupcode=startupcode)


def _names(value: Any, key: str,
           problem: Callable[[str], ConfigurationError]) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or \
            not all(isinstance(v, str) for v in value):
        raise problem(f"'{key}' must be a list of names, e.g. {key} = ['name']")
    return tuple(value)


__all__ = ["DeviceConfig", "GROUPS", "SetupInfo", "device", "read_setup", "run_setup_file"]
