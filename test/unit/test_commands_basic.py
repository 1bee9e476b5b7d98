"""Basic commands (sleep, messages, help, ListCommands) and the setup commands."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from nicos.core import ConfigurationError, DaemonHooks, Session, UsageError

MOTOR = "nicos.devices.generic.VirtualMotor"


class Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@pytest.fixture
def messages() -> Iterator[Messages]:
    handler = Messages()
    logger = logging.getLogger("nicos")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


class SleepRecorder(DaemonHooks):
    def __init__(self) -> None:
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "one.py").write_text(textwrap.dedent(f"""
        description = "first setup"
        group = "basic"
        devices = dict(m1=device("{MOTOR}", abslimits=(0, 1), description="motor one"))
    """))
    (tmp_path / "two.py").write_text(textwrap.dedent(f"""
        description = "second setup"
        devices = dict(m2=device("{MOTOR}", abslimits=(0, 1)))
    """))
    (tmp_path / "bad.py").write_text("devices = (\n")
    return tmp_path


@pytest.fixture
def hooks() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def session(folder: Path, hooks: SleepRecorder) -> Iterator[Session]:
    session = Session([folder], hooks=hooks)
    yield session
    session.shutdown()


def test_sleep_goes_through_the_hooks(session: Session, hooks: SleepRecorder) -> None:
    session.namespace["sleep"](2.5)
    assert hooks.slept == [2.5]


def test_print_commands_log_to_the_user_logger(session: Session, messages: Messages) -> None:
    ns = session.namespace
    ns["printinfo"]("aligned", 3)
    ns["printwarning"]("careful")
    ns["printerror"]("no beam")
    assert [(r.name, r.levelno, r.getMessage()) for r in messages.records] == [
        ("nicos", logging.INFO, "aligned 3"), ("nicos", logging.WARNING, "careful"),
        ("nicos", logging.ERROR, "no beam")]


def test_help_for_commands_devices_and_overview(session: Session, messages: Messages) -> None:
    ns = session.namespace
    session.load_setup("one")
    ns["help"](ns["maw"])
    text = messages.texts()[-1]
    assert text.startswith("maw(*dev_target_pairs: 'Any') -> 'None'\n\nMove devices and wait")
    assert text.endswith("Example: maw(mono, 2.5)")
    ns["help"](ns["m1"])
    text = messages.texts()[-1]
    assert text.startswith("m1: motor one (nicos.devices.generic.virtual_motor.VirtualMotor)")
    assert "value: 0.000 deg" in text and "speed" in text and "m1.maw()" in text
    ns["help"]()
    assert "Devices: m1" in messages.texts()[-1]
    ns["ListCommands"]()
    listing = messages.texts()[-1]
    assert "maw           Move devices and wait until all have arrived" in listing
    assert "ListSetups" in listing


def test_setup_commands(session: Session, messages: Messages) -> None:
    ns = session.namespace
    ns["NewSetup"]("one")
    ns["AddSetup"]("two")
    assert set(session.devices) == {"m1", "m2"} and "m2" in ns
    ns["RemoveSetup"]("two")
    assert "m2" not in ns
    with pytest.raises(UsageError, match="setup 'tow' is not loaded"):
        ns["RemoveSetup"]("tow")
    with pytest.raises(ConfigurationError, match=r"bad.py, line 1: syntax error"):
        ns["AddSetup"]("bad")
    assert session.explicit_setups == ["one"]
    ns["NewSetup"]()  # reload
    assert session.explicit_setups == ["one"]
    ns["ListSetups"]()
    texts = messages.texts()
    assert texts[:3] == ["loaded setups: one", "loaded setups: one, two", "loaded setups: one"]
    listing = texts[-1].splitlines()
    assert listing[0] == "Setups (* loaded, + included):"
    assert listing[1].startswith("  bad              (broken)") and "line 1" in listing[1]
    assert listing[2] == "* one              basic      first setup"
    assert listing[3] == "  two              optional   second setup"
