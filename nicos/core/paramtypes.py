"""Value types for parameters and targets.

A type converts a value to its canonical form or refuses it.  Refusals raise
``ValueTypeError`` whose text completes the sentence "parameter 'speed' ...":
``must be a number >= 0``.  The device adds its name, the parameter and the
offending value, so the user reads
``mono: parameter 'speed' must be a number >= 0, got 'fast'``.

Each type also knows a neutral default (``zero``), used when a parameter has
neither a default nor is mandatory.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any


class ValueTypeError(ValueError):
    """A value does not fit a type; the message says what would fit."""


class ParamType:
    """Base of all types: ``convert`` and the phrase used in refusals."""

    description = "a value"
    zero: Any = None

    def __call__(self, value: Any) -> Any:
        return self.convert(value)

    def convert(self, value: Any) -> Any:
        return value

    def refuse(self) -> ValueTypeError:
        return ValueTypeError(f"must be {self.description}")

    def __repr__(self) -> str:
        return f"<{self.description}>"


def _is_real_number(value: Any) -> bool:
    # bool is an int for Python, but True as a speed is surely a mistake
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class AnyType(ParamType):
    description = "any value"


class FloatRange(ParamType):
    """A finite number, optionally bounded (bounds included)."""

    def __init__(self, low: float | None = None, high: float | None = None) -> None:
        self.low, self.high = low, high
        if low is not None and high is not None:
            self.description = f"a number between {low:g} and {high:g}"
        elif low is not None:
            self.description = f"a number >= {low:g}"
        elif high is not None:
            self.description = f"a number <= {high:g}"
        else:
            self.description = "a number"
        self.zero = 0.0 if (low is None or low <= 0) and (high is None or high >= 0) \
            else float(low if low is not None else high)

    def convert(self, value: Any) -> float:
        if not _is_real_number(value) or not math.isfinite(value):
            raise self.refuse()
        value = float(value)
        if (self.low is not None and value < self.low) or \
                (self.high is not None and value > self.high):
            raise self.refuse()
        return value


class IntRange(ParamType):
    """An integer, optionally bounded (bounds included)."""

    def __init__(self, low: int | None = None, high: int | None = None) -> None:
        self.low, self.high = low, high
        if low is not None and high is not None:
            self.description = f"an integer between {low} and {high}"
        elif low is not None:
            self.description = f"an integer >= {low}"
        elif high is not None:
            self.description = f"an integer <= {high}"
        else:
            self.description = "an integer"
        self.zero = 0 if (low is None or low <= 0) and (high is None or high >= 0) \
            else (low if low is not None else high)

    def convert(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            # 3.0 is fine as an integer, 3.5 is not
            if _is_real_number(value) and math.isfinite(value) and float(value).is_integer():
                value = int(value)
            else:
                raise self.refuse()
        value = int(value)
        if (self.low is not None and value < self.low) or \
                (self.high is not None and value > self.high):
            raise self.refuse()
        return value


class BoolType(ParamType):
    description = "True or False"
    zero = False

    def convert(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return bool(value)
        raise self.refuse()


class StringType(ParamType):
    description = "a string"
    zero = ""

    def __init__(self, nonempty: bool = False) -> None:
        self.nonempty = nonempty
        if nonempty:
            self.description = "a non-empty string"

    def convert(self, value: Any) -> str:
        if not isinstance(value, str) or (self.nonempty and not value.strip()):
            raise self.refuse()
        return value


class OneOf(ParamType):
    """One of a fixed set of values (compared by equality)."""

    def __init__(self, *choices: Any) -> None:
        if not choices:
            raise ValueError("oneof() needs at least one choice")
        self.choices = choices
        self.description = "one of " + ", ".join(repr(c) for c in choices)
        self.zero = choices[0]

    def convert(self, value: Any) -> Any:
        for choice in self.choices:
            # True == 1 in Python, but True is no answer to oneof(0, 1, 2)
            if value is choice or (value == choice and not isinstance(value, bool)):
                return choice
        raise self.refuse()


class ListOf(ParamType):
    """A list (or tuple) whose items all fit one type; stored as a tuple so that
    a parameter value cannot be changed behind the device's back."""

    def __init__(self, item: ParamType | Callable[[Any], Any]) -> None:
        self.item = as_type(item)
        self.description = f"a list of {_plural(self.item.description)}"
        self.zero = ()

    def convert(self, value: Any) -> tuple:
        if not isinstance(value, (list, tuple)):
            raise self.refuse()
        try:
            return tuple(self.item.convert(v) for v in value)
        except ValueTypeError:
            raise self.refuse() from None


class TupleOf(ParamType):
    """A tuple of fixed length, one type per position."""

    def __init__(self, *items: ParamType | Callable[[Any], Any]) -> None:
        self.items = tuple(as_type(i) for i in items)
        self.description = f"a tuple of {len(self.items)} values (" + \
            ", ".join(i.description for i in self.items) + ")"
        self.zero = tuple(i.zero for i in self.items)

    def convert(self, value: Any) -> tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(self.items):
            raise self.refuse()
        try:
            return tuple(t.convert(v) for t, v in zip(self.items, value, strict=True))
        except ValueTypeError:
            raise self.refuse() from None


class LimitsType(ParamType):
    """A pair ``(low, high)`` of numbers with low <= high."""

    description = "a pair (low, high) of numbers with low <= high"
    zero = (0.0, 0.0)

    def convert(self, value: Any) -> tuple[float, float]:
        if not isinstance(value, (list, tuple)) or len(value) != 2 or \
                not all(_is_real_number(v) and math.isfinite(v) for v in value):
            raise self.refuse()
        low, high = float(value[0]), float(value[1])
        if low > high:
            raise self.refuse()
        return (low, high)


class NoneOr(ParamType):
    """None, or a value of another type."""

    def __init__(self, inner: ParamType | Callable[[Any], Any]) -> None:
        self.inner = as_type(inner)
        self.description = f"None or {self.inner.description}"

    def convert(self, value: Any) -> Any:
        if value is None:
            return None
        try:
            return self.inner.convert(value)
        except ValueTypeError:
            raise self.refuse() from None


class DeviceName(ParamType):
    """The name of a device as written in setups (checked for form only)."""

    description = "a device name (letters, digits and _, not starting with a digit)"

    def convert(self, value: Any) -> str:
        if not isinstance(value, str) or not value.isidentifier():
            raise self.refuse()
        return value


def _plural(description: str) -> str:
    # "a number >= 0" -> "numbers >= 0": good enough for the phrases above
    for article in ("a ", "an "):
        if description.startswith(article):
            head, _, tail = description[len(article):].partition(" ")
            return f"{head}s {tail}".rstrip()
    return description


class _CallableType(ParamType):
    """Adapter for a plain converter function given as a type."""

    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.func = func
        self.description = (func.__doc__ or f"a valid {func.__name__}").strip()

    def convert(self, value: Any) -> Any:
        try:
            return self.func(value)
        except (TypeError, ValueError):
            raise self.refuse() from None


anytype = AnyType()
floatrange = FloatRange
intrange = IntRange
oneof = OneOf
listof = ListOf
tupleof = TupleOf
nonemptystring = StringType(nonempty=True)
string = StringType()
boolean = BoolType()
limits = LimitsType()
none_or = NoneOr
devicename = DeviceName()

_PLAIN_TYPES: dict[Any, ParamType] = {
    float: FloatRange(), int: IntRange(), str: string, bool: boolean, None: anytype,
}


def as_type(spec: ParamType | Callable[[Any], Any] | None) -> ParamType:
    """Accept ``float``, ``int``, ``str``, ``bool``, a ParamType or a converter
    function, and return a ParamType."""
    if isinstance(spec, ParamType):
        return spec
    if spec in _PLAIN_TYPES:
        return _PLAIN_TYPES[spec]
    if callable(spec):
        return _CallableType(spec)
    raise TypeError(f"not a parameter type: {spec!r}")


def describe_value(value: Any, limit: int = 60) -> str:
    """repr() of a refused value, shortened for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


__all__ = [
    "AnyType", "BoolType", "DeviceName", "FloatRange", "IntRange", "LimitsType", "ListOf",
    "NoneOr", "OneOf", "ParamType", "StringType", "TupleOf", "ValueTypeError", "anytype",
    "as_type", "boolean", "describe_value", "devicename", "floatrange", "intrange", "limits",
    "listof", "none_or", "nonemptystring", "oneof", "string", "tupleof",
]
