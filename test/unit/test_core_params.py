"""Declared parameters: types, defaults, overrides and the messages of refusals."""

from __future__ import annotations

import pytest

from nicos.core import (
    Attach,
    ConfigurationError,
    Device,
    InvalidValueError,
    Moveable,
    Override,
    Param,
    ProgrammingError,
    Readable,
    Session,
    UsageError,
    floatrange,
    intrange,
    limits,
    listof,
    none_or,
    nonemptystring,
    oneof,
    tupleof,
)
from nicos.core.paramtypes import ValueTypeError


@pytest.fixture
def session() -> Session:
    return Session(setup_paths=[])


class Mono(Device):
    parameters = {
        "speed": Param("Speed", type=floatrange(0), default=1.0, settable=True, unit="A/s"),
        "crystal": Param("Crystal", type=oneof("PG002", "Si111"), mandatory=True),
        "label": Param("Label", type=nonemptystring, default="mono"),
        "written": Param("Values seen by doWriteSpeed", type=listof(float), default=(),
                         internal=True),
    }

    def doWriteSpeed(self, value: float) -> None:
        self._store_param("written", (*self.written, value))


def test_types_convert_and_describe_what_fits() -> None:
    assert floatrange(0)(3) == 3.0 and isinstance(floatrange(0)(3), float)
    assert intrange(1, 4)(2.0) == 2
    assert oneof("a", "b")("b") == "b"
    assert listof(float)([1, 2]) == (1.0, 2.0)
    assert tupleof(int, str)((1, "x")) == (1, "x")
    assert limits([1, 2]) == (1.0, 2.0)
    assert none_or(float)(None) is None
    refusals = [
        (floatrange(0), "fast", "must be a number >= 0"),
        (floatrange(0), -1, "must be a number >= 0"),
        (floatrange(0, 10), float("nan"), "must be a number between 0 and 10"),
        (floatrange(), True, "must be a number"),
        (intrange(1, 4), 2.5, "must be an integer between 1 and 4"),
        (oneof("a", "b"), "c", "must be one of 'a', 'b'"),
        (oneof(0, 1), True, "must be one of 0, 1"),
        (listof(float), [1, "x"], "must be a list of numbers"),
        (tupleof(int, int), (1,), "must be a tuple of 2 values (an integer, an integer)"),
        (limits, (2, 1), "must be a pair (low, high) of numbers with low <= high"),
        (nonemptystring, "  ", "must be a non-empty string"),
    ]
    for kind, value, message in refusals:
        with pytest.raises(ValueTypeError) as info:
            kind(value)
        assert str(info.value) == message


def test_setup_values_are_checked_with_device_and_parameter_named(session: Session) -> None:
    with pytest.raises(ConfigurationError) as info:
        Mono("mono", session, crystal="PG002", speed="fast")
    assert str(info.value) == "mono: parameter 'speed' must be a number >= 0, got 'fast'"
    with pytest.raises(ConfigurationError, match=r"mono: 'crystal' must be given in the setup"):
        Mono("mono", session)
    with pytest.raises(ConfigurationError,
                       match=r"mono: unknown parameter 'sped' \(did you mean 'speed'\?\)"):
        Mono("mono", session, crystal="PG002", sped=2)
    with pytest.raises(ConfigurationError, match="'written' is kept by the device itself"):
        Mono("mono", session, crystal="PG002", written=[1.0])
    with pytest.raises(ConfigurationError, match="cannot be a device name"):
        Mono("2mono", session, crystal="PG002")


def test_defaults_and_runtime_changes(session: Session) -> None:
    mono = Mono("mono", session, crystal="Si111")
    assert (mono.speed, mono.label, mono.crystal) == (1.0, "mono", "Si111")
    mono.speed = 2
    assert mono.speed == 2.0 and mono.written == (2.0,)
    with pytest.raises(InvalidValueError) as info:
        mono.speed = -3
    assert str(info.value) == "mono: parameter 'speed' must be a number >= 0, got -3"
    assert mono.speed == 2.0 and mono.written == (2.0,)  # refused before doWriteSpeed
    with pytest.raises(UsageError, match="mono: parameter 'crystal' cannot be changed"):
        mono.crystal = "PG002"


def test_subclasses_inherit_and_override_declarations(session: Session) -> None:
    class FastMono(Mono):
        parameters = {"extra": Param("More", type=int, default=3)}
        parameter_overrides = {"speed": Override(default=5.0),
                               "crystal": Override(default="PG002")}

    fast = FastMono("fast", session)
    assert (fast.speed, fast.crystal, fast.extra) == (5.0, "PG002", 3)
    assert set(Mono.all_parameters) < set(FastMono.all_parameters)
    assert "extra" not in Mono.all_parameters
    table = {row[0]: row for row in fast.parameter_table()}
    assert table["speed"][2] == "A/s"


def test_declaration_mistakes_are_programming_errors(session: Session) -> None:
    with pytest.raises(ProgrammingError, match="override of unknown parameter"):
        class Broken(Device):
            parameter_overrides = {"nothere": Override(default=1)}

    class BadDefault(Device):
        parameters = {"n": Param("n", type=intrange(1, 3), default=7)}

    with pytest.raises(ProgrammingError, match="default of parameter 'n' must be an integer"):
        BadDefault("bad", session)


def test_attached_devices_must_have_the_right_kind(session: Session) -> None:
    class Reader(Readable):
        def doRead(self) -> float:
            return 1.0

    class UsesMotor(Device):
        attached_devices = {"motor": Attach("A moveable", Moveable)}

    reader = Reader("reader", session)
    with pytest.raises(ConfigurationError,
                       match="user: 'motor' must be a Moveable device, got <Reader reader>"):
        UsesMotor("user", session, motor=reader)
    with pytest.raises(ConfigurationError, match="'motor' must be given in the setup"):
        UsesMotor("user", session)
