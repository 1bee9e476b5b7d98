"""Setup files and the session: loading, includes, errors naming file and line,
all-or-nothing changes, the demo and the custom instrument."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nicos.core import ConfigurationError, DaemonHooks, Session, UsageError
from nicos.core.paths import PROJECT_ROOT

MOTOR = "nicos.devices.generic.VirtualMotor"


class EventLog(DaemonHooks):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def emit(self, event: str, data: Any) -> None:
        if event != "cache":
            self.events.append((event, data))


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write(tmp_path, "base", f"""
        description = "base motors"
        group = "lowlevel"
        devices = dict(
            a=device("{MOTOR}", abslimits=(-10, 10), speed=0),
        )
    """)
    write(tmp_path, "main", """
        description = "the main setup"
        group = "basic"
        includes = ["base"]
        devices = dict(
            c=device("nicos.devices.generic.VirtualCoder", motor="a"),
        )
        startupcode = "started = True"
    """)
    write(tmp_path, "extra", f"""
        devices = dict(
            b=device("{MOTOR}", abslimits=(0, 5), speed=0),
        )
    """)
    return tmp_path


@pytest.fixture
def hooks() -> EventLog:
    return EventLog()


@pytest.fixture
def session(folder: Path, hooks: EventLog) -> Iterator[Session]:
    session = Session([folder], hooks=hooks)
    yield session
    session.shutdown()


def test_load_with_includes(session: Session, hooks: EventLog) -> None:
    session.load_setup("main")
    assert session.loaded_setups == ["base", "main"]
    assert session.explicit_setups == ["main"]
    assert list(session.devices) == ["a", "c"]
    ns = session.namespace
    assert ns["a"] is session.devices["a"] and ns["started"] is True
    assert callable(ns["maw"]) and ns["maw"].__name__ == "maw"
    ns["maw"](ns["a"], 3)
    assert ns["c"].read() == 3.0
    assert ("setup", [["base", "main"], ["main"]]) in hooks.events
    assert ("device", ["create", ["a", "c"]]) in hooks.events


def test_add_keeps_devices_remove_drops_them(session: Session) -> None:
    session.load_setup("main")
    a = session.devices["a"]
    session.load_setup("extra")
    assert session.devices["a"] is a and session.explicit_setups == ["main", "extra"]
    session.unload_setup("extra")
    assert "b" not in session.devices and "b" not in session.namespace
    with pytest.raises(UsageError, match="'base' was not loaded by itself but included by "
                                         "'main'"):
        session.unload_setup("base")
    session.load_setup("main", replace=True)
    assert session.devices["a"] is not a  # NewSetup creates everything anew


def _assert_unchanged(session: Session, before: dict) -> None:
    assert session.devices == before
    assert session.explicit_setups == ["main"]
    session.namespace["maw"]("a", 2)  # still usable
    assert session.devices["a"].read() == 2.0


def test_syntax_error_names_file_and_line(session: Session, folder: Path) -> None:
    session.load_setup("main")
    before = dict(session.devices)
    path = write(folder, "broken", """
        description = "oops"
        devices = dict(
            x=device("nicos.devices.generic.VirtualMotor", abslimits=(0, 1)),,
        )
    """)
    with pytest.raises(ConfigurationError) as info:
        session.load_setup("broken")
    assert str(info.value) == f"{path}, line 3: syntax error: invalid syntax"
    _assert_unchanged(session, before)


def test_bad_parameter_names_file_line_device_and_parameter(session: Session,
                                                            folder: Path) -> None:
    session.load_setup("main")
    before = dict(session.devices)
    registered = len(session._emergency_functions)
    path = write(folder, "badparam", f"""
        devices = dict(
            ok=device("{MOTOR}", abslimits=(0, 1)),

            m=device("{MOTOR}",
                     abslimits=(0, 1), speed="fast"),
        )
    """)
    with pytest.raises(ConfigurationError) as info:
        session.load_setup("badparam")
    assert str(info.value) == (f"{path}, line 4: m: parameter 'speed' must be a number >= 0, "
                               "got 'fast'")
    _assert_unchanged(session, before)
    # the device created before the failure was shut down again
    assert len(session._emergency_functions) == registered
    assert "ok" not in session.namespace


@pytest.mark.parametrize(("text", "line", "message"), [
    ("import os\n", 1, "import is not allowed in setup files"),
    ("x = 1\ndef f():\n    pass\n", 2, "a function definition is not allowed"),
    ("x = ().__class__\n", 1, "the private attribute '__class__' is not allowed"),
    ("devices = dict(\n    m=device('x.Y', speed=undefined_name),\n)\n", 2,
     "NameError: name 'undefined_name' is not defined"),
    ("devices = dict(m=device('nicos.devices.generic.VirtualMotr'))\n", 1,
     "device 'm': module 'nicos.devices.generic' has no class 'VirtualMotr' "
     "(did you mean 'VirtualMotor'?)"),
    ("devices = dict(m=device('nowhere.Motor'))\n", 1, "cannot import module 'nowhere'"),
    ("devices = dict(m=device('nicos.devices.generic.VirtualCoder', motor='zz'))\n", 1,
     "no device named 'zz' in the loaded setups"),
])
def test_errors_name_file_and_line(session: Session, folder: Path, text: str, line: int,
                                   message: str) -> None:
    path = folder / "bad.py"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        session.load_setup("bad")
    assert str(info.value).startswith(f"{path}, line {line}: ")
    assert message in str(info.value)
    assert session.devices == {}


def test_setup_level_mistakes(session: Session, folder: Path) -> None:
    write(folder, "typo", "include = ['base']\n")
    with pytest.raises(ConfigurationError, match=r"'include' is not a setup entry "
                                                 r"\(did you mean 'includes'\?\)"):
        session.load_setup("typo")
    write(folder, "missing", "includes = ['bsae']\n")
    with pytest.raises(ConfigurationError, match=r"no setup named 'bsae' \(did you mean "
                                                 r"'base'\?\).*included by .*missing.py"):
        session.load_setup("missing")
    with pytest.raises(ConfigurationError, match="no setup named 'nothing'"):
        session.load_setup("nothing")
    write(folder, "dup", f"devices = dict(a=device('{MOTOR}', abslimits=(0, 1)))\n")
    with pytest.raises(ConfigurationError, match=r"dup.py, line 1: device 'a' is already "
                                                 r"defined in .*base.py, line 4"):
        session.load_setup("main", "dup")
    write(folder, "exclusive", "excludes = ['extra']\n")
    with pytest.raises(ConfigurationError, match="'exclusive' cannot be loaded together "
                                                 "with 'extra'"):
        session.load_setup("extra", "exclusive")
    write(folder, "clash", f"devices = dict(read=device('{MOTOR}', abslimits=(0, 1)))\n")
    with pytest.raises(ConfigurationError, match="cannot be called 'read', that is the name "
                                                 "of a command"):
        session.load_setup("clash")
    assert session.devices == {} and session.loaded_setups == []


def test_failing_startupcode_is_reported_but_setup_stays(session: Session,
                                                         folder: Path) -> None:
    write(folder, "starter", """
        devices = dict()
        startupcode = "1 / 0"
    """)
    with pytest.raises(ConfigurationError, match="starter.py: startupcode failed: "
                                                 "ZeroDivisionError"):
        session.load_setup("starter")
    assert session.loaded_setups == ["starter"]


def test_configdata_reads_values_of_another_file(session: Session, folder: Path) -> None:
    write(folder, "values", """
        group = "configdata"
        LIMITS = (-3, 3)
    """)
    write(folder, "user", f"""
        devices = dict(m=device("{MOTOR}", abslimits=configdata("values.LIMITS")))
    """)
    session.load_setup("user")
    assert session.devices["m"].abslimits == (-3.0, 3.0)
    with pytest.raises(ConfigurationError, match="only holds configuration data"):
        session.load_setup("values")


def test_changed_device_recreates_the_ones_attached_to_it(session: Session,
                                                          folder: Path) -> None:
    session.load_setup("main")
    a, c = session.devices["a"], session.devices["c"]
    write(folder, "base", f"""
        group = "lowlevel"
        devices = dict(a=device("{MOTOR}", abslimits=(-10, 10), speed=5))
    """)
    session.load_setup("extra")
    assert session.devices["a"] is not a and session.devices["a"].speed == 5.0
    assert session.devices["c"] is not c
    assert session.devices["c"]._attached_device("motor") is session.devices["a"]


def test_demo_instrument_loads_from_the_default_path() -> None:
    session = Session()
    try:
        session.load_setup("demo")
        assert session.loaded_setups == ["table", "detector", "demo"]
        assert {"mono", "sth", "stt", "sx", "T", "det", "timer", "image"} <= set(session.devices)
        session.devices["sth"].speed = 0
        session.namespace["maw"]("sth", 10)
        det = session.devices["det"]
        assert det.read_arrays()[0].shape == (64, 64)
    finally:
        session.shutdown()


def test_custom_instrument_brings_its_own_device_class_and_command() -> None:
    session = Session()
    try:
        assert PROJECT_ROOT / "custom" / "refl" / "setups" in session.catalog.paths
        session.load_setup("refl")
        slit = session.devices["s1"]
        assert type(slit).__module__ == "custom.refl.devices"
        assert slit.read() == 2.0
        for blade in ("s1l", "s1r"):
            session.devices[blade].speed = 0
        session.namespace["maw"](slit, 4)
        assert session.devices["s1l"].read() == -2.0 and slit.read() == 4.0
        assert "slits" in session.namespace
        session.load_setup("demo", replace=True)
        assert "slits" not in session.namespace and "s1" not in session.namespace
    finally:
        session.shutdown()
