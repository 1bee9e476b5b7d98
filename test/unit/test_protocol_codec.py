"""The pickle-free JSON codec."""

import enum
import json
import math
import pathlib
import pickle
import struct

import numpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nicos.protocols.daemon.codec import (
    MAX_DEPTH,
    CodecError,
    decode,
    decode_transfer_pickle,
    encode,
    to_wire,
)

# -- to_wire ------------------------------------------------------------------


def test_plain_values_pass_through():
    value = {'a': [1, 2.5, 'x', None, True, False]}
    assert to_wire(value) == value


def test_tuples_become_lists_recursively():
    assert to_wire((1, (2, [3, (4,)]))) == [1, [2, [3, [4]]]]


def test_sets_become_sorted_lists():
    assert to_wire({3, 1, 2}) == [1, 2, 3]
    assert to_wire(frozenset({'b', 'a'})) == ['a', 'b']


def test_unorderable_sets_still_convert():
    assert sorted(to_wire({1, 'a'}), key=str) == [1, 'a']


def test_numpy_values_become_python_values():
    wire = to_wire({'s': numpy.int32(7), 'f': numpy.float32(0.5), 'b': numpy.bool_(True),
                    'a': numpy.arange(6, dtype=numpy.uint16).reshape(2, 3)})
    assert wire == {'s': 7, 'f': 0.5, 'b': True, 'a': [[0, 1, 2], [3, 4, 5]]}
    assert type(wire['s']) is int
    assert type(wire['b']) is bool
    assert encode(numpy.float64(1.5)) == b'1.5'


def test_subclasses_of_native_types_are_sent_as_native_values():
    class Color(enum.IntEnum):
        RED = 3

    class Name(str):
        pass

    wire = to_wire([Color.RED, Name('x')])
    assert wire == [3, 'x']
    assert [type(item) for item in wire] == [int, str]


@pytest.mark.parametrize('key', [1, -7, 2.5, 1e100, math.nan, -math.inf, True, False, None])
def test_non_string_keys_are_converted_like_json_does(key):
    assert to_wire({key: 'v'}) == json.loads(json.dumps({key: 'v'}))


def test_numpy_keys_are_converted():
    assert to_wire({numpy.int64(9): 'a', numpy.float32(0.5): 'b'}) == {'9': 'a', '0.5': 'b'}


def test_keys_that_collide_after_conversion_are_refused():
    with pytest.raises(CodecError, match='collides'):
        to_wire({1: 'a', '1': 'b'})


def test_other_key_types_are_refused():
    with pytest.raises(CodecError, match='dict key of type tuple'):
        to_wire({(1, 2): 'x'})


def test_pickle_keys_are_renamed_at_any_depth():
    value = {'__pickle__': 1, 'inner': [{'__pickle__': {'__pickle__': 2}}]}
    assert to_wire(value) == {'_pickle_': 1, 'inner': [{'_pickle_': {'_pickle_': 2}}]}
    assert b'__pickle__' not in encode(value)


def test_pickle_key_rename_never_silently_drops_data():
    with pytest.raises(CodecError):
        to_wire({'__pickle__': 1, '_pickle_': 2})


@pytest.mark.parametrize('value, type_name', [
    (b'raw', 'bytes'), (bytearray(b'x'), 'bytearray'), (object(), 'object'),
    (Ellipsis, 'ellipsis'), (1j, 'complex'), (ValueError('x'), 'ValueError'),
])
def test_unsupported_objects_are_refused(value, type_name):
    with pytest.raises(CodecError, match=f'cannot serialize object of type {type_name}'):
        to_wire({'k': [value]})


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_nesting_is_bounded_when_encoding():
    assert to_wire(nested(MAX_DEPTH)) == nested(MAX_DEPTH)
    with pytest.raises(CodecError, match='nested deeper'):
        to_wire(nested(MAX_DEPTH + 1))


def test_self_referencing_data_is_refused():
    loop: list = []
    loop.append(loop)
    with pytest.raises(CodecError, match='nested deeper'):
        encode(loop)


# -- encode -------------------------------------------------------------------


def test_encode_is_compact_ascii_json():
    assert encode({'a': (1, 'ä')}) == b'{"a":[1,"\\u00e4"]}'
    assert encode('3.12.2') == b'"3.12.2"'
    assert encode([]) == b'[]'


def test_encode_writes_bare_nan_and_infinity():
    assert encode([math.nan, math.inf, -math.inf]) == b'[NaN,Infinity,-Infinity]'


def test_encoded_dict_starts_with_a_brace():
    assert encode({'protocol_version': 24}).startswith(b'{')


def test_encode_refuses_ints_python_cannot_print():
    with pytest.raises(CodecError):
        encode(10 ** 5000)


# -- decode -------------------------------------------------------------------


def test_decode_plain_json():
    assert decode(b'{"a": [1, 2.5, "x", null, true]}') == {'a': [1, 2.5, 'x', None, True]}
    assert decode(bytearray(b'[]')) == []
    assert decode(memoryview(b'"\\u00e4"')) == 'ä'


def test_decode_accepts_nan_tokens():
    value = decode(b'[NaN, Infinity, -Infinity]')
    assert math.isnan(value[0]) and value[1:] == [math.inf, -math.inf]


def test_decode_refuses_byte_order_mark():
    with pytest.raises(CodecError, match='payload is not valid UTF-8'):
        decode(b'\xef\xbb\xbf[]')


@pytest.mark.parametrize('data', [b'"\xff"', b'"\xc3"', b'"\xed\xa0\x80"'])
def test_decode_refuses_invalid_utf8(data):
    with pytest.raises(CodecError, match='payload is not valid UTF-8'):
        decode(data)


@pytest.mark.parametrize('data', [b'', b'[1,', b'{"a" 1}', b'nope', b'[] []', b'1' * 5000])
def test_decode_reports_garbled_json(data):
    with pytest.raises(CodecError, match='garbled JSON'):
        decode(data)


def test_decode_bounds_nesting():
    assert decode(b'[' * MAX_DEPTH + b']' * MAX_DEPTH) == nested(MAX_DEPTH)
    with pytest.raises(CodecError, match='nested deeper'):
        decode(b'[' * (MAX_DEPTH + 1) + b']' * (MAX_DEPTH + 1))
    with pytest.raises(CodecError, match='nested deeper'):
        decode(b'{"a":' * (MAX_DEPTH + 1) + b'1' + b'}' * (MAX_DEPTH + 1))


def test_decode_survives_nesting_beyond_the_interpreter_stack():
    with pytest.raises(CodecError, match='nested deeper'):
        decode(b'[' * 200_000 + b']' * 200_000)


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = '[' * 500
    assert decode(encode([text])) == [text]


def raw_json(value: object) -> bytes:
    """JSON as an upstream peer writes it (our encoder would rename '__pickle__')."""
    return json.dumps(value).encode('ascii')


def pickled(value: object) -> bytes:
    return raw_json({'__pickle__': pickle.dumps(value, protocol=2).decode('latin-1')})


@pytest.mark.parametrize('document', [
    b'{"__pickle__": "x"}',
    b'[1, {"a": [{"__pickle__": "x"}]}]',
    b'{"\\u005f_pickle__": "x"}',  # escaped spelling of the same key
    b'{"a": 1, "__pickle__": "x"}',
])
def test_decode_refuses_pickled_objects(document):
    with pytest.raises(CodecError, match='pickled data is refused'):
        decode(document)


def test_decode_refuses_a_valid_bytes_pickle_unless_allowed():
    with pytest.raises(CodecError, match='pickled data is refused'):
        decode(pickled(b'abc'))


# -- transfer pickles -----------------------------------------------------------


@pytest.mark.parametrize('content', [
    b'abc', b'', b'\x00', bytes(range(256)), b'\xff' * 70_000, b'latin1',
])
def test_upstream_bytes_pickles_decode_to_their_bytes(content):
    text = pickle.dumps(content, protocol=2).decode('latin-1')
    assert decode_transfer_pickle(text) == content
    document = b'["' + b'x' + b'", ' + pickled(content) + b']'
    assert decode(document, allow_transfer_bytes=True) == ['x', content]


def test_long_memo_opcodes_are_accepted():
    long_put = b'r' + struct.pack('<I', 1000)
    text = (b'\x80\x02c_codecs\nencode\n' + long_put + b'X\x02\x00\x00\x00ab' + long_put
            + b'X\x06\x00\x00\x00latin1\x86' + long_put + b'R' + long_put + b'.')
    assert decode_transfer_pickle(text.decode('latin-1')) == b'ab'


def malicious_pickles() -> list[bytes]:
    class Exploit:
        def __reduce__(self):
            return (print, ('owned',))

    system_call = b'\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.'
    codecs_but_other_encoding = (b'\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00ab'
                                 b'X\x05\x00\x00\x00utf-8\x86R.')
    return [
        system_call,
        codecs_but_other_encoding,
        pickle.dumps(Exploit(), protocol=2),
        pickle.dumps('just a string', protocol=2),
        pickle.dumps([b'ab'], protocol=2),
        pickle.dumps(b'ab', protocol=4),
        pickle.dumps(b'ab', protocol=2) + b'cos\nsystem\n',  # trailing opcodes
        pickle.dumps(b'ab', protocol=2)[:-1],  # no STOP
        pickle.dumps(b'ab', protocol=2).replace(b'X\x02\x00', b'X\xff\x00'),  # overlong
        b'',
    ]


@pytest.mark.parametrize('data', malicious_pickles())
def test_anything_but_the_bytes_pickle_is_refused(data):
    with pytest.raises(CodecError, match='pickled data is refused'):
        decode_transfer_pickle(data.decode('latin-1'))
    document = raw_json([{'__pickle__': data.decode('latin-1')}])
    with pytest.raises(CodecError, match='pickled data is refused'):
        decode(document, allow_transfer_bytes=True)


def test_bytes_pickle_with_extra_keys_is_refused():
    text = pickle.dumps(b'ab', protocol=2).decode('latin-1')
    with pytest.raises(CodecError, match='pickled data is refused'):
        decode(raw_json({'__pickle__': text, 'more': 1}), allow_transfer_bytes=True)


def test_pickle_text_outside_latin1_is_refused():
    with pytest.raises(CodecError, match='pickled data is refused'):
        decode_transfer_pickle('\u20ac')


def test_nothing_under_nicos_unpickles():
    root = pathlib.Path(__file__).resolve().parents[2] / 'nicos'
    forbidden = ('pickle.load', 'Unpickler', 'import pickle', 'from pickle', 'marshal.load')
    offenders = [(str(path), word) for path in root.rglob('*.py')
                 for word in forbidden if word in path.read_text()]
    assert offenders == []


# -- properties -----------------------------------------------------------------

json_keys = st.one_of(st.text(max_size=8), st.sampled_from(['__pickle__', '_pickle_x']))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(),
                         st.floats(allow_nan=False), st.text())
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.tuples(children, children),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=30)


@given(json_values)
def test_roundtrip(value):
    assert decode(encode(value)) == to_wire(value)


@given(st.recursive(json_scalars,
                    lambda children: st.one_of(
                        st.lists(children, max_size=3),
                        st.dictionaries(json_keys, children, max_size=3)),
                    max_leaves=20))
def test_encoded_data_never_carries_a_pickle_key(value):
    try:
        data = encode(value)
    except CodecError:
        return  # a rename collision is refused, which is fine
    decode(data)  # would raise 'pickled data is refused'


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_codec_error(data):
    try:
        decode(data)
    except CodecError:
        pass


@given(st.text(max_size=200))
def test_arbitrary_pickle_text_is_refused_or_yields_bytes(text):
    try:
        assert isinstance(decode_transfer_pickle(text), bytes)
    except CodecError:
        pass
