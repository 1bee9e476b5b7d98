"""Fuzzing the frame layer and the payload codec (hypothesis).

What this adds to test_protocol_framing.py and test_protocol_codec.py:

- differential fuzzing: the incremental decoders (sans-IO) and the blocking socket
  readers the daemon uses must split any byte stream, hostile or not, into the same
  frames and fail on it with the same error;
- memory: a frame that announces a large length and then stalls or ends makes the
  readers hold only about what actually arrived, never the announced size;
- the codec: documents with ``__pickle__`` objects at random places are refused, or
  (``transfer``) turned into exactly the bytes a real unpickler would produce;
  mutated bytes pickles are refused or decode to what ``pickle.loads`` says.
"""

from __future__ import annotations

import json
import pickle
import struct
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nicos.protocols.daemon import ACK, ENQ, NAK, STX
from nicos.protocols.daemon.codec import (
    PICKLE_KEY,
    CodecError,
    decode,
    decode_transfer_pickle,
    encode,
)
from nicos.protocols.daemon.framing import (
    BadStartByte,
    CommandDecoder,
    ConnectionClosed,
    EventDecoder,
    FrameError,
    FrameTooLarge,
    ReplyDecoder,
    command_frame,
    event_frame,
    nak_frame,
    read_command,
    read_event,
    read_reply,
    stx_frame,
)

# Fixed examples (derandomize) and no deadline: `make test` must not turn red on a
# busy machine or by the luck of the draw. Random, long exploration is `make fuzz`.
FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

MAX_PAYLOAD = 96
MAX_BLOB = 48
MAX_BLOB_TOTAL = 120
# Zero bytes after every stream: they complete whatever frame is open (the longest
# possible is an event with 255 empty blobs: 8 + MAX_PAYLOAD + 255 * 4 bytes), and then
# 0x00, which starts no frame, ends both readers with the same error.
PAD = b"\x00" * 2048


class ChunkedSocket:
    """recv_into over fixed bytes, at most ``chunk`` bytes per call, then EOF."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.chunk = chunk

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        count = min(nbytes or len(buffer), len(buffer), self.chunk, len(self.data) - self.pos)
        buffer[:count] = self.data[self.pos:self.pos + count]
        self.pos += count
        return count


# -- stream strategies -------------------------------------------------------------------

codes = st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0x1005, 0x1001, 0x22, 0x42]))
lengths = st.one_of(st.integers(0, MAX_PAYLOAD + 8), st.integers(0, 0xFFFFFFFF),
                    st.sampled_from([0, 1, MAX_PAYLOAD, MAX_PAYLOAD + 1, 0xFFFFFFFF]))
noise = st.one_of(st.binary(max_size=32), st.sampled_from([ENQ, ACK, STX, NAK, b"\x00"]))

command_piece = st.one_of(
    noise,
    st.builds(command_frame, codes, st.binary(max_size=MAX_PAYLOAD)),
    st.builds(lambda c, n: struct.pack(">cHI", ENQ, c, n), codes, lengths),
)
reply_piece = st.one_of(
    noise,
    st.just(ACK),
    st.builds(stx_frame, st.binary(max_size=MAX_PAYLOAD)),
    st.builds(nak_frame, st.binary(max_size=MAX_PAYLOAD)),
    st.builds(lambda s, n: s + struct.pack(">I", n), st.sampled_from([STX, NAK]), lengths),
)
event_piece = st.one_of(
    noise,
    st.builds(event_frame, codes, st.binary(max_size=MAX_PAYLOAD),
              st.lists(st.binary(max_size=MAX_BLOB), max_size=3)),
    st.builds(lambda c, b, n: struct.pack(">cHBI", STX, c, b, n), codes,
              st.integers(0, 255), lengths),
    st.builds(struct.Struct(">I").pack, lengths),  # a blob length
)


def streams(piece: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(piece, max_size=10).map(b"".join)


cuts = st.lists(st.integers(0, 4096), max_size=10)


def split(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in zip(marks, marks[1:], strict=False)]


# -- the two ways of reading ------------------------------------------------------------

def incremental(decoder: Any, stream: bytes, points: list[int]) -> tuple[list, type | None]:
    """Frames and the error class; an incomplete frame at the end counts as the
    end of the connection (ConnectionClosed)."""
    frames: list = []
    for piece in split(stream, points):
        try:
            frames += decoder.feed(piece)
        except FrameError as err:
            # a failed decoder keeps failing the same way
            with pytest.raises(type(err)):
                decoder.feed(b"\x05")
            return frames, type(err)
    return frames, (ConnectionClosed if decoder.buffered else None)


def blocking(read: Any, stream: bytes, chunk: int) -> tuple[list, type]:
    sock = ChunkedSocket(stream, chunk)
    frames: list = []
    for _ in range(len(stream) + 1):  # every frame takes at least one byte
        try:
            frames.append(read(sock))
        except FrameError as err:
            return frames, type(err)
    raise AssertionError("blocking reader did not stop")


def both_agree(make_decoder: Any, read: Any, stream: bytes, points: list[int],
               chunk: int) -> None:
    stream += PAD
    # Byte by byte, the incremental decoder completes every frame in its own feed().
    frames_a, error_a = incremental(make_decoder(), stream, list(range(len(stream))))
    frames_b, error_b = blocking(read, stream, chunk)
    assert frames_a == frames_b
    assert error_a in (BadStartByte, FrameTooLarge)
    assert error_a is error_b, (error_a, error_b)
    # In arbitrary pieces the same, except that frames completed in the piece that
    # also holds the error are not returned (feed() raises instead).
    frames_c, error_c = incremental(make_decoder(), stream, points)
    assert error_c is error_a
    assert frames_c == frames_a[:len(frames_c)]


@FUZZ
@given(streams(command_piece), cuts, st.integers(1, 64))
def test_command_readers_agree_on_any_stream(stream: bytes, points: list[int],
                                             chunk: int) -> None:
    both_agree(lambda: CommandDecoder(max_payload=MAX_PAYLOAD),
               lambda sock: read_command(sock, MAX_PAYLOAD), stream, points, chunk)


@FUZZ
@given(streams(reply_piece), cuts, st.integers(1, 64))
def test_reply_readers_agree_on_any_stream(stream: bytes, points: list[int],
                                           chunk: int) -> None:
    both_agree(lambda: ReplyDecoder(max_payload=MAX_PAYLOAD),
               lambda sock: read_reply(sock, MAX_PAYLOAD), stream, points, chunk)


@FUZZ
@given(streams(event_piece), cuts, st.integers(1, 64))
def test_event_readers_agree_on_any_stream(stream: bytes, points: list[int],
                                           chunk: int) -> None:
    both_agree(lambda: EventDecoder(MAX_PAYLOAD, MAX_BLOB, MAX_BLOB_TOTAL),
               lambda sock: read_event(sock, MAX_PAYLOAD, MAX_BLOB, MAX_BLOB_TOTAL),
               stream, points, chunk)


@FUZZ
@given(streams(st.one_of(command_piece, reply_piece, event_piece)), cuts)
def test_decoders_hold_no_more_than_one_section(stream: bytes, points: list[int]) -> None:
    """Whatever arrives, a decoder buffers at most its largest allowed section."""
    decoders = [(CommandDecoder(MAX_PAYLOAD), MAX_PAYLOAD),
                (ReplyDecoder(MAX_PAYLOAD), MAX_PAYLOAD),
                (EventDecoder(MAX_PAYLOAD, MAX_BLOB, MAX_BLOB_TOTAL),
                 MAX_PAYLOAD + MAX_BLOB_TOTAL)]
    for decoder, bound in decoders:
        for piece in split(stream, points):
            try:
                decoder.feed(piece)
            except FrameError:
                break
            assert decoder.buffered <= bound


# -- memory of the blocking readers --------------------------------------------------------

BIG = 16 * 1024 * 1024  # announced: the daemon's default command limit
INITIAL = 256 * 1024  # framing._INITIAL_RECEIVE_BUFFER


def peak_while(func: Any) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        func()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(0, 2 * INITIAL), st.sampled_from(["command", "reply", "event", "blob"]))
def test_announced_size_is_not_allocated_before_it_arrives(arrived: int, kind: str) -> None:
    """A peer announces 16 MiB and sends ``arrived`` bytes, then closes: the reader
    holds about what arrived (doubling growth), not the announced size."""
    body = b"x" * arrived
    if kind == "command":
        stream, read = struct.pack(">cHI", ENQ, 0x22, BIG) + body, read_command
        args: tuple = (BIG,)
    elif kind == "reply":
        stream, read, args = STX + struct.pack(">I", BIG) + body, read_reply, (BIG,)
    elif kind == "event":
        stream, read = struct.pack(">cHBI", STX, 0x1001, 0, BIG) + body, read_event
        args = (BIG, BIG, BIG)
    else:
        stream = struct.pack(">cHBI", STX, 0x100D, 255, 2) + b"[]" + \
            struct.pack(">I", BIG) + body
        read, args = read_event, (64, BIG, 4 * BIG)
    sock = ChunkedSocket(stream, 65536)

    def run() -> None:
        with pytest.raises(ConnectionClosed):
            read(sock, *args)

    assert peak_while(run) < 4 * max(INITIAL, arrived) + 256 * 1024


# -- the codec --------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=False), st.text(max_size=20))


def bytes_pickle(value: bytes) -> str:
    return pickle.dumps(value, 2).decode("latin-1")


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("unpickled!",))


foreign_pickles = st.sampled_from([
    pickle.dumps(_Evil(), 2).decode("latin-1"),
    pickle.dumps({"a": 1}, 2).decode("latin-1"),
    pickle.dumps(bytearray(b"ab"), 2).decode("latin-1"),
    pickle.dumps(b"abc", 4).decode("latin-1"),
    "",
    "garbage",
])


@st.composite
def documents(draw: Any) -> tuple[Any, Any, bool]:
    """(JSON value to send, expected decoded value with bytes allowed, contains a
    foreign pickle)."""
    foreign = False

    def build(depth: int) -> tuple[Any, Any]:
        nonlocal foreign
        kind = draw(st.integers(0, 5 if depth < 4 else 1))
        if kind <= 1:
            value = draw(json_scalars)
            return value, value
        if kind == 2:
            content = draw(st.binary(max_size=30))
            return {PICKLE_KEY: bytes_pickle(content)}, content
        if kind == 3:
            foreign = True
            extra = draw(st.dictionaries(st.text(max_size=5), json_scalars, max_size=2))
            obj = {**extra, PICKLE_KEY: draw(foreign_pickles)}
            return obj, None
        if kind == 4:
            items = [build(depth + 1) for _ in range(draw(st.integers(0, 4)))]
            return [a for a, _ in items], [b for _, b in items]
        keys = draw(st.lists(st.text(max_size=6).filter(lambda k: k != PICKLE_KEY),
                             max_size=4, unique=True))
        items = [build(depth + 1) for _ in keys]
        return ({k: a for k, (a, _) in zip(keys, items, strict=True)},
                {k: b for k, (_, b) in zip(keys, items, strict=True)})

    sent, expected = build(0)
    return sent, expected, foreign


def contains(value: Any, predicate: Any) -> bool:
    if predicate(value):
        return True
    if isinstance(value, list):
        return any(contains(item, predicate) for item in value)
    if isinstance(value, dict):
        return any(contains(item, predicate) for item in value.values())
    return False


@FUZZ
@given(documents())
def test_pickle_objects_anywhere_are_refused_or_exact_bytes(document: tuple) -> None:
    sent, expected, foreign = document
    data = json.dumps(sent).encode()
    has_pickle = contains(sent, lambda v: isinstance(v, dict) and PICKLE_KEY in v)
    # without the transfer exception nothing with a pickle key gets through
    if has_pickle:
        with pytest.raises(CodecError):
            decode(data)
    else:
        assert decode(data) == sent
    # with it, only the exact bytes pickle does, and gives exactly its bytes
    if foreign:
        with pytest.raises(CodecError):
            decode(data, allow_transfer_bytes=True)
    else:
        assert decode(data, allow_transfer_bytes=True) == expected


mutations = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete"]),
                               st.integers(0, 10_000), st.integers(0, 255)),
                     min_size=1, max_size=4)


@FUZZ
@given(st.binary(max_size=64), st.sampled_from([True, False]), mutations)
def test_mutated_bytes_pickles_are_refused_or_decode_like_pickle(
        content: bytes, memo: bool, edits: list[tuple[str, int, int]]) -> None:
    data = bytearray(pickle.dumps(content, 2) if memo else _dumps_without_memo(content))
    for op, where, byte in edits:
        pos = where % (len(data) + (op == "insert"))
        if op == "flip" and data:
            data[pos % len(data)] ^= byte or 1
        elif op == "insert":
            data.insert(pos, byte)
        elif data:
            del data[pos % len(data)]
    try:
        result = decode_transfer_pickle(bytes(data).decode("latin-1"))
    except CodecError:
        return
    # Accepted: it matched the whitelisted opcode sequence, so unpickling it is safe
    # here, and must give the same bytes.
    assert type(result) is bytes
    assert pickle.loads(bytes(data)) == result


def _dumps_without_memo(content: bytes) -> bytes:
    import io

    stream = io.BytesIO()
    pickler = pickle.Pickler(stream, 2)
    pickler.fast = True  # no memo opcodes
    pickler.dump(content)
    return stream.getvalue()


@FUZZ
@given(st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=30))
def test_encode_decode_roundtrip_never_emits_a_pickle_key(value: Any) -> None:
    data = encode(value)
    # read with plain json, which would build any __pickle__ object an upstream peer
    # unpickles (the text may still occur as a value)
    assert not contains(json.loads(data), lambda v: isinstance(v, dict) and PICKLE_KEY in v)
    decoded = decode(data)
    # the only change: a literal __pickle__ key is renamed
    assert not contains(decoded, lambda v: isinstance(v, dict) and PICKLE_KEY in v)


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_payloads_never_raise_anything_but_codec_error(data: bytes) -> None:
    for allow in (False, True):
        try:
            decode(data, allow_transfer_bytes=allow)
        except CodecError:
            pass


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(150, 3000), st.sampled_from("[{"))
def test_deep_nesting_is_refused_not_a_crash(depth: int, bracket: str) -> None:
    closing = "]" if bracket == "[" else "}"
    inner = "1" if bracket == "[" else ""
    if bracket == "{":
        text = '{"a":' * depth + "1" + "}" * depth
    else:
        text = "[" * depth + inner + closing * depth
    try:
        value = decode(text.encode())
    except CodecError:
        return
    assert depth <= 200 and value is not None


def test_frame_errors_are_the_documented_classes() -> None:
    # The readers above may only fail with these; anything else would escape the
    # daemon's connection threads as an unexpected error.
    assert issubclass(BadStartByte, FrameError)
    assert issubclass(FrameTooLarge, FrameError)
    assert issubclass(ConnectionClosed, FrameError)
