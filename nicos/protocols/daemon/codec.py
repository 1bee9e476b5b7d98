"""Pickle-free JSON codec for payloads of the daemon protocol.

Upstream JSON peers replace any object carrying a ``__pickle__`` key by
unpickling its value.  We therefore never emit such a key (it would let user
data run code on upstream clients) and never accept one, with the single
exception of the fixed pickle an upstream client sends for raw bytes in
``transfer``, which is matched opcode by opcode and never unpickled.
"""

import json
import math
import struct
import sys
from typing import Any

PICKLE_KEY = '__pickle__'
# What a literal PICKLE_KEY in outgoing data is renamed to.
RENAMED_PICKLE_KEY = '_pickle_'

MAX_DEPTH = 200


class CodecError(ValueError):
    """Data that cannot be encoded, or a payload that must not be decoded."""


# -- encoding ---------------------------------------------------------------

def to_wire(obj: Any) -> Any:
    """Return *obj* converted to JSON-native values (see module docstring)."""
    return _to_wire(obj, 0)


def _to_wire(obj: Any, depth: int) -> Any:
    """Convert *obj*, which sits inside *depth* enclosing containers."""
    # Exact type checks first: they cover nearly all traffic cheaply.
    kind = type(obj)
    if obj is None or kind is str or kind is bool or kind is int or kind is float:
        return obj
    if kind is list or kind is tuple:
        return _sequence_to_wire(obj, depth)
    if kind is dict:
        return _dict_to_wire(obj, depth)
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)  # e.g. IntEnum: send the plain number
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return _sequence_to_wire(obj, depth)
    if isinstance(obj, dict):
        return _dict_to_wire(obj, depth)
    if isinstance(obj, (set, frozenset)):
        try:
            items = sorted(obj)
        except TypeError:  # mixed, unorderable members: keep iteration order
            items = list(obj)
        return _sequence_to_wire(items, depth)
    numpy = sys.modules.get('numpy')  # only if the application already uses numpy
    if numpy is not None:
        if isinstance(obj, numpy.generic):
            return _to_wire(_numpy_scalar_value(obj), depth)
        if isinstance(obj, numpy.ndarray):
            return _to_wire(obj.tolist(), depth)
    raise CodecError(f'cannot serialize object of type {kind.__name__}')


def _too_deep() -> CodecError:
    return CodecError(f'data nested deeper than {MAX_DEPTH} levels')


# Types sent as they are. Containers check their members' types inline instead of
# calling _to_wire for each: replies are mostly such scalars, and the calls were half
# of the cost of a getstatus reply.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _sequence_to_wire(items: Any, depth: int) -> list:
    if depth >= MAX_DEPTH:
        raise _too_deep()
    inner = depth + 1
    return [item if type(item) in _SCALARS else _to_wire(item, inner) for item in items]


def _numpy_scalar_value(scalar: Any) -> Any:
    value = scalar.item()
    if type(value) is type(scalar):
        # item() hands back the numpy object itself for types without a Python
        # counterpart (e.g. longdouble); avoid looping forever on it.
        raise CodecError(f'cannot serialize object of type {type(scalar).__name__}')
    return value


def _dict_to_wire(obj: dict, depth: int) -> dict:
    if depth >= MAX_DEPTH:
        raise _too_deep()
    result = {}
    inner = depth + 1
    for key, value in obj.items():
        wire_key = key if type(key) is str and key != PICKLE_KEY else _key_to_wire(key)
        if wire_key in result:
            raise CodecError(f'dict key {key!r} collides with another key after conversion')
        result[wire_key] = value if type(value) in _SCALARS else _to_wire(value, inner)
    return result


def _key_to_wire(key: Any) -> str:
    if isinstance(key, str):
        key = str(key)
        return RENAMED_PICKLE_KEY if key == PICKLE_KEY else key
    numpy = sys.modules.get('numpy')
    if numpy is not None and isinstance(key, numpy.generic):
        key = _numpy_scalar_value(key)
    # Same spelling as the json module (and thus upstream) uses for such keys.
    if key is None:
        return 'null'
    if isinstance(key, bool):
        return 'true' if key else 'false'
    if isinstance(key, int):
        return str(int(key))
    if isinstance(key, float):
        if math.isnan(key):
            return 'NaN'
        if math.isinf(key):
            return 'Infinity' if key > 0 else '-Infinity'
        return float.__repr__(float(key))
    raise CodecError(f'cannot serialize dict key of type {type(key).__name__}')


_encoder = json.JSONEncoder(ensure_ascii=True, allow_nan=True, check_circular=False,
                            separators=(',', ':'))


def _not_native(obj: Any) -> Any:
    raise TypeError(f'{type(obj).__name__} left in converted data')


# JSONEncoder.encode() builds a new C encoder for every call, which costs more than
# encoding a typical reply; this one is built once (same settings as _encoder).
_c_encode = None if json.encoder.c_make_encoder is None else json.encoder.c_make_encoder(
    None, _not_native, json.encoder.encode_basestring_ascii, None, ':', ',', False, False,
    True)


def encode(obj: Any) -> bytes:
    """Serialize *obj* to compact, ASCII-only JSON bytes."""
    # check_circular is off: to_wire() builds a fresh tree and its depth limit
    # already stops self-referencing input.
    wire = to_wire(obj)
    try:
        if _c_encode is None or type(wire) is str:
            text = _encoder.encode(wire)
        else:
            text = ''.join(_c_encode(wire, 0))
    except ValueError as err:  # e.g. an int beyond Python's digit limit for str()
        raise CodecError(f'cannot serialize: {err}') from None
    return text.encode('ascii')


# -- decoding ---------------------------------------------------------------

_UTF8_BOM = b'\xef\xbb\xbf'


def decode(data: bytes, *, allow_transfer_bytes: bool = False) -> Any:
    """Parse a JSON payload, refusing pickled objects and excessive nesting.

    With *allow_transfer_bytes*, an object that is exactly the upstream
    client's pickle of a bytes value decodes to that bytes value.
    """
    if bytes(data[:3]) == _UTF8_BOM:
        raise CodecError('payload is not valid UTF-8 (it starts with a byte-order mark)')
    try:
        text = str(data, 'utf-8')
    except UnicodeDecodeError as err:
        raise CodecError(f'payload is not valid UTF-8 ({err.reason} at byte {err.start})') from None

    try:
        value = _decoders[allow_transfer_bytes].decode(text)
    except CodecError:
        raise
    except ValueError as err:  # JSONDecodeError, or an int with too many digits
        raise CodecError(f'garbled JSON: {err}') from None
    except RecursionError:
        raise _too_deep() from None
    # Every nesting level needs an opening bracket, so few brackets mean
    # shallow data and the walk can be skipped.
    if text.count('[') + text.count('{') > MAX_DEPTH:
        _check_depth(value)
    return value


def _object_builder(allow_transfer_bytes: bool) -> Any:
    def build_object(pairs: list[tuple[str, Any]]) -> Any:
        result = dict(pairs)
        if PICKLE_KEY in result:
            value = result[PICKLE_KEY]
            if allow_transfer_bytes and len(pairs) == 1 and isinstance(value, str):
                return decode_transfer_pickle(value)
            raise CodecError('pickled data is refused')
        return result
    return build_object


# Made once: json.loads() with a hook builds a new decoder for every call.
_decoders = {allow: json.JSONDecoder(object_pairs_hook=_object_builder(allow))
             for allow in (False, True)}


def _check_depth(value: Any) -> None:
    pending = [(value, 0)]
    while pending:
        container, depth = pending.pop()
        if depth >= MAX_DEPTH:
            raise _too_deep()
        items = container.values() if type(container) is dict else container
        for item in items:
            if type(item) is list or type(item) is dict:
                pending.append((item, depth + 1))


# -- the one pickle we understand --------------------------------------------

_PROTO_2 = b'\x80\x02'
_GLOBAL_CODECS_ENCODE = b'c_codecs\nencode\n'
_GLOBAL_BYTES = b'c__builtin__\nbytes\n'  # how protocol 2 pickles an empty bytes value
_BINUNICODE = 0x58  # 'X' + u32 LE length + UTF-8
_BINPUT = 0x71  # 'q' + u8 memo index
_LONG_BINPUT = 0x72  # 'r' + u32 LE memo index
_EMPTY_TUPLE = b')'
_TUPLE2 = b'\x86'
_REDUCE = b'R'
_STOP = b'.'


class _PickleMatcher:
    """Cursor over pickle bytes that only accepts what it is told to expect."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def literal(self, expected: bytes) -> bool:
        if self.data.startswith(expected, self.pos):
            self.pos += len(expected)
            return True
        return False

    def require(self, expected: bytes) -> None:
        if not self.literal(expected):
            raise _refused()

    def skip_memo(self) -> None:
        # Memo writes have no effect on the value; the pickler may emit them after
        # every item.
        if self.pos < len(self.data):
            opcode = self.data[self.pos]
            if opcode == _BINPUT:
                self._advance(2)
            elif opcode == _LONG_BINPUT:
                self._advance(5)

    def unicode(self) -> str:
        if self.pos >= len(self.data) or self.data[self.pos] != _BINUNICODE:
            raise _refused()
        self._advance(1)
        start = self.pos
        self._advance(4)
        (length,) = struct.unpack_from('<I', self.data, start)
        start = self.pos
        self._advance(length)
        try:
            return self.data[start:self.pos].decode('utf-8')
        except UnicodeDecodeError:
            raise _refused() from None

    def _advance(self, count: int) -> None:
        if self.pos + count > len(self.data):
            raise _refused()
        self.pos += count

    def at_end(self) -> bool:
        return self.pos == len(self.data)


def _refused() -> CodecError:
    return CodecError('pickled data is refused (only raw bytes from transfer are accepted)')


def decode_transfer_pickle(text: str) -> bytes:
    """Recover the bytes from the pickle an upstream client sends in ``transfer``.

    *text* is the value of the ``__pickle__`` key (pickle bytes as latin-1
    characters).  Anything but the exact expected opcode sequence raises
    CodecError; nothing is ever unpickled.
    """
    try:
        data = text.encode('latin-1')
    except UnicodeEncodeError:
        raise _refused() from None
    cursor = _PickleMatcher(data)
    cursor.require(_PROTO_2)
    if cursor.literal(_GLOBAL_CODECS_ENCODE):
        cursor.skip_memo()
        content = cursor.unicode()
        cursor.skip_memo()
        if cursor.unicode() != 'latin1':
            raise _refused()
        cursor.skip_memo()
        cursor.require(_TUPLE2)
        try:
            result = content.encode('latin-1')
        except UnicodeEncodeError:
            raise _refused() from None
    else:
        cursor.require(_GLOBAL_BYTES)
        cursor.skip_memo()
        cursor.require(_EMPTY_TUPLE)
        result = b''
    cursor.skip_memo()
    cursor.require(_REDUCE)
    cursor.skip_memo()
    cursor.require(_STOP)
    if not cursor.at_end():
        raise _refused()
    return result
