"""Frame encoders, incremental decoders and blocking readers."""

import socket
import struct
import threading

import numpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nicos.protocols.daemon import ACK, ENQ, NAK, STX, command2code, event2code
from nicos.protocols.daemon.codec import decode
from nicos.protocols.daemon.framing import (
    BLOB_HEADER_SIZE,
    COMMAND_HEADER_SIZE,
    EVENT_HEADER_SIZE,
    REPLY_HEADER_SIZE,
    BadStartByte,
    BufferedCommandReader,
    CommandDecoder,
    ConnectionClosed,
    EventDecoder,
    FrameError,
    FrameTooLarge,
    ReplyDecoder,
    ack_frame,
    command_frame,
    encode_command,
    encode_event,
    encode_reply,
    event_frame,
    event_frame_parts,
    nak_frame,
    read_command,
    read_event,
    read_reply,
    recv_exact,
    stx_frame,
)


class ScriptedSocket:
    """Serves fixed bytes through recv_into, at most *chunk* bytes per call."""

    def __init__(self, data: bytes, chunk: int = 1 << 30) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.chunk = chunk
        self.calls = 0

    def recv_into(self, buffer, nbytes: int = 0) -> int:
        self.calls += 1
        count = min(nbytes or len(buffer), len(buffer), self.chunk, len(self.data) - self.pos)
        buffer[:count] = self.data[self.pos:self.pos + count]
        self.pos += count
        return count


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[start:end] for start, end in zip(points, points[1:], strict=False)]


# -- worked examples of the protocol reference (section 2.7) ---------------------

GETVERSION = bytes.fromhex('05 00 41 00 00 00 02 5B 5D')
VERSION_REPLY = bytes.fromhex('03 00 00 00 08 22 33 2E 31 32 2E 32 22')
ERROR_REPLY = bytes.fromhex('15 00 00 00 16') + b'"no script is running"'
STATUS_EVENT = bytes.fromhex('03 10 05 00 00 00 00 06 5B 30 2C 20 33 5D')


def test_example_getversion_command():
    assert encode_command('getversion', []) == GETVERSION
    assert command_frame(0x41, b'[]') == GETVERSION
    assert CommandDecoder().feed(GETVERSION) == [(0x41, b'[]')]


def test_example_replies():
    assert encode_reply(True, '3.12.2') == VERSION_REPLY
    assert encode_reply(True, None) == ack_frame() == bytes.fromhex('06')
    assert len(b'"no script is running"') == 0x16
    assert encode_reply(False, 'no script is running') == ERROR_REPLY
    assert ReplyDecoder().feed(VERSION_REPLY + ACK + ERROR_REPLY) == [
        (True, b'"3.12.2"'), (True, None), (False, b'"no script is running"')]


def test_example_status_event():
    assert event_frame(event2code['status'], b'[0, 3]') == STATUS_EVENT
    [(code, payload, blobs)] = EventDecoder().feed(STATUS_EVENT)
    assert (code, decode(payload), blobs) == (0x1005, [0, 3], [])
    [(code, payload, blobs)] = EventDecoder().feed(encode_event('status', (0, 3)))
    assert (code, decode(payload), blobs) == (0x1005, [0, 3], [])


def test_example_command_payloads():
    assert encode_command('eventmask', [['livedata']])[COMMAND_HEADER_SIZE:] == \
        b'[["livedata"]]'
    credentials = {'login': 'user', 'passwd': 'RSA:abc', 'display': ''}
    frame = encode_command('authenticate', [credentials])
    assert frame[:3] == b'\x05\x00\x64'
    assert decode(frame[COMMAND_HEADER_SIZE:]) == [credentials]
    frame = encode_command('queue', ('scan.py', 'move(x, 1)\ncount(1)\n'))
    assert frame[:3] == b'\x05\x00\x03'
    assert decode(frame[COMMAND_HEADER_SIZE:]) == ['scan.py', 'move(x, 1)\ncount(1)\n']


# -- encoders ---------------------------------------------------------------------


def test_raw_reply_encoders():
    assert stx_frame(b'') == b'\x03\x00\x00\x00\x00'
    assert nak_frame(b'"x"') == b'\x15\x00\x00\x00\x03"x"'


def test_event_with_blobs_layout():
    frame = event_frame(0x100D, b'{}', [b'ab', b''])
    assert frame == (b'\x03\x10\x0d\x02\x00\x00\x00\x02{}'
                     b'\x00\x00\x00\x02ab\x00\x00\x00\x00')


def test_numpy_blobs_count_bytes_not_items():
    image = numpy.arange(12, dtype='<u4').reshape(3, 4)
    [(_, _, blobs)] = EventDecoder().feed(encode_event('livedata', {'tag': 'live'}, [image]))
    assert blobs == [image.tobytes()]


def test_event_blob_count_is_limited():
    assert len(EventDecoder().feed(event_frame(0x100D, b'1', [b'x'] * 255))[0][2]) == 255
    with pytest.raises(ValueError, match='at most 255 blobs'):
        event_frame(0x100D, b'1', [b'x'] * 256)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match='unknown command'):
        encode_command('format_disk', [])
    with pytest.raises(ValueError, match='unknown event'):
        encode_event('fireworks', None)


def test_nak_payload_is_always_a_string():
    assert decode(encode_reply(False, ValueError('bad'))[REPLY_HEADER_SIZE:]) == 'bad'


# -- incremental decoders ------------------------------------------------------------


def test_bad_start_byte_is_detected_on_the_first_byte():
    with pytest.raises(BadStartByte, match='0x58') as info:
        CommandDecoder().feed(b'X')
    assert info.value.got == 0x58
    with pytest.raises(BadStartByte):
        ReplyDecoder().feed(ENQ)
    with pytest.raises(BadStartByte):
        EventDecoder().feed(ACK)


def test_too_large_command_is_refused_from_its_header():
    decoder = CommandDecoder()
    header = struct.pack('>cHI', ENQ, 0x41, 20_000_000)
    with pytest.raises(FrameTooLarge,
                       match='of 20000000 bytes exceeds the limit of 16777216') as info:
        decoder.feed(header)
    assert (info.value.length, info.value.limit) == (20_000_000, 16 * 1024 * 1024)


def test_too_large_reply_and_event_are_refused_from_their_headers():
    with pytest.raises(FrameTooLarge):
        ReplyDecoder(max_payload=10).feed(NAK + struct.pack('>I', 11))
    with pytest.raises(FrameTooLarge):
        EventDecoder(max_payload=10).feed(struct.pack('>cHBI', STX, 0x1001, 0, 11))


def test_blob_limits():
    one_big_blob = struct.pack('>cHBI', STX, 0x100D, 1, 0) + struct.pack('>I', 33)
    with pytest.raises(FrameTooLarge, match='blob of 33 bytes'):
        EventDecoder(max_blob=32).feed(one_big_blob)
    three_blobs = event_frame(0x100D, b'', [b'x' * 30] * 3)
    with pytest.raises(FrameTooLarge, match='blobs of one event'):
        EventDecoder(max_blob=32, max_blob_total=80).feed(three_blobs)
    assert len(EventDecoder(max_blob=32, max_blob_total=90).feed(three_blobs)) == 1


def test_payload_at_the_limit_is_accepted():
    assert CommandDecoder(max_payload=3).feed(command_frame(1, b'abc')) == [(1, b'abc')]


def test_a_failed_decoder_stays_failed():
    decoder = CommandDecoder()
    with pytest.raises(BadStartByte):
        decoder.feed(b'\x00')
    with pytest.raises(BadStartByte):
        decoder.feed(GETVERSION)
    assert decoder.buffered == 0


def test_partial_frames_are_held_until_complete():
    decoder = CommandDecoder()
    assert decoder.feed(GETVERSION[:4]) == []
    assert decoder.buffered == 3  # the start byte is already consumed
    assert decoder.feed(GETVERSION[4:] + GETVERSION[:1]) == [(0x41, b'[]')]
    assert decoder.feed(GETVERSION[1:]) == [(0x41, b'[]')]
    assert decoder.buffered == 0


def test_unknown_command_codes_pass_through():
    assert CommandDecoder().feed(command_frame(0xBEEF, b'[]')) == [(0xBEEF, b'[]')]


# -- blocking readers ----------------------------------------------------------------


def test_blocking_readers_use_few_receive_calls():
    sock = ScriptedSocket(GETVERSION)
    assert read_command(sock) == (0x41, b'[]')
    assert sock.calls == 2
    sock = ScriptedSocket(STATUS_EVENT)
    assert read_event(sock) == (0x1005, b'[0, 3]', [])
    assert sock.calls == 2
    sock = ScriptedSocket(ACK)
    assert read_reply(sock) == (True, None)
    assert sock.calls == 1


def test_blocking_readers_handle_trickling_data():
    stream = VERSION_REPLY + ACK + ERROR_REPLY + stx_frame(b'')
    sock = ScriptedSocket(stream, chunk=1)
    assert [read_reply(sock) for _ in range(4)] == [
        (True, b'"3.12.2"'), (True, None), (False, b'"no script is running"'), (True, b'')]
    sock = ScriptedSocket(event_frame(0x100D, b'{}', [b'abc', b'', b'de']), chunk=2)
    assert read_event(sock) == (0x100D, b'{}', [b'abc', b'', b'de'])


def test_blocking_readers_check_limits_before_reading_the_payload():
    header_only = ScriptedSocket(struct.pack('>cHI', ENQ, 1, 1000))
    with pytest.raises(FrameTooLarge):
        read_command(header_only, max_payload=999)
    with pytest.raises(FrameTooLarge):
        read_reply(ScriptedSocket(STX + struct.pack('>I', 1000)), max_payload=999)
    with pytest.raises(FrameTooLarge):
        read_event(ScriptedSocket(struct.pack('>cHBI', STX, 1, 0, 1000)), max_payload=999)
    blob_header_only = ScriptedSocket(struct.pack('>cHBI', STX, 1, 1, 0) + struct.pack('>I', 50))
    with pytest.raises(FrameTooLarge):
        read_event(blob_header_only, max_blob=49)


def test_blocking_readers_check_start_bytes():
    with pytest.raises(BadStartByte):
        read_command(ScriptedSocket(VERSION_REPLY))
    with pytest.raises(BadStartByte):
        read_reply(ScriptedSocket(GETVERSION))
    with pytest.raises(BadStartByte):
        read_event(ScriptedSocket(GETVERSION + b'\x00'))


@pytest.mark.parametrize('cut', [0, 1, 6, 8])
def test_end_of_stream_raises_connection_closed(cut):
    with pytest.raises(ConnectionClosed):
        read_command(ScriptedSocket(GETVERSION[:cut]))


def test_recv_exact_grows_its_buffer_for_large_reads():
    data = bytes(range(256)) * 5000  # larger than the initial buffer
    sock = ScriptedSocket(data, chunk=100_000)
    assert recv_exact(sock, len(data)) == data
    assert recv_exact(ScriptedSocket(b''), 0) == b''


def test_real_socket_roundtrip_with_large_payload_and_blobs():
    payload = b'"' + b'x' * 3_000_000 + b'"'
    blob = numpy.arange(500_000, dtype='<f8')
    sender, receiver = socket.socketpair()
    with sender, receiver:
        def send():
            sender.sendmsg(event_frame_parts(0x100D, payload, [blob, b'tail']))
            sender.sendall(encode_command('getversion', []))
            sender.shutdown(socket.SHUT_WR)

        thread = threading.Thread(target=send)
        thread.start()
        code, got_payload, blobs = read_event(receiver)
        assert read_command(receiver) == (0x41, b'[]')
        with pytest.raises(ConnectionClosed):
            read_command(receiver)
        thread.join()
    assert (code, got_payload) == (0x100D, payload)
    assert blobs == [blob.tobytes(), b'tail']


# -- properties ------------------------------------------------------------------------

cuts = st.lists(st.integers(0, 10_000), max_size=12)
codes = st.integers(0, 0xFFFF)
small_lengths = st.integers(0, 100)


def hostile_stream(*headers: st.SearchStrategy) -> st.SearchStrategy:
    """Byte streams mixing plausible headers, control bytes and noise."""
    pieces = st.one_of(st.binary(max_size=24), st.sampled_from([ENQ, ACK, STX, NAK]), *headers)
    return st.lists(pieces, max_size=12).map(b''.join)


command_headers = st.builds(lambda code, length: struct.pack('>cHI', ENQ, code, length),
                            codes, small_lengths)
reply_headers = st.builds(lambda start, length: start + struct.pack('>I', length),
                          st.sampled_from([STX, NAK]), small_lengths)
event_headers = st.builds(lambda code, nblobs, length: struct.pack('>cHBI', STX, code, nblobs,
                                                                    length),
                          codes, st.integers(0, 4), small_lengths)
blob_headers = st.builds(struct.Struct('>I').pack, small_lengths)

MAX_PAYLOAD = 64
MAX_BLOB = 32
MAX_BLOB_TOTAL = 80

# Whole valid frames keep the decoders busy past the first few bytes.
valid_commands = st.builds(command_frame, codes, st.binary(max_size=MAX_PAYLOAD))
valid_replies = st.one_of(st.just(ACK), st.builds(stx_frame, st.binary(max_size=MAX_PAYLOAD)),
                          st.builds(nak_frame, st.binary(max_size=MAX_PAYLOAD)))
valid_events = st.builds(event_frame, codes, st.binary(max_size=MAX_PAYLOAD),
                         st.lists(st.binary(max_size=MAX_BLOB), max_size=3))

decoder_cases = [
    (lambda: CommandDecoder(max_payload=MAX_PAYLOAD),
     hostile_stream(command_headers, valid_commands),
     MAX_PAYLOAD + COMMAND_HEADER_SIZE),
    (lambda: ReplyDecoder(max_payload=MAX_PAYLOAD),
     hostile_stream(reply_headers, valid_replies),
     MAX_PAYLOAD + REPLY_HEADER_SIZE),
    (lambda: EventDecoder(max_payload=MAX_PAYLOAD, max_blob=MAX_BLOB,
                          max_blob_total=MAX_BLOB_TOTAL),
     hostile_stream(event_headers, blob_headers, valid_events),
     MAX_PAYLOAD + MAX_BLOB_TOTAL + EVENT_HEADER_SIZE + BLOB_HEADER_SIZE),
]


@pytest.mark.parametrize('make_decoder, streams, bound', decoder_cases,
                         ids=['command', 'reply', 'event'])
def test_hostile_streams_only_raise_frame_errors_and_stay_bounded(make_decoder, streams, bound):
    @given(streams, cuts)
    def check(stream, cut_points):
        decoder = make_decoder()
        for piece in split(stream, cut_points):
            try:
                decoder.feed(piece)
            except FrameError:
                return
            assert decoder.buffered <= bound

    check()


commands = st.lists(st.tuples(codes, st.binary(max_size=80)), max_size=6)
replies = st.lists(st.one_of(st.just((True, None)),
                             st.tuples(st.booleans(), st.binary(max_size=80))), max_size=6)
events = st.lists(st.tuples(codes, st.binary(max_size=40),
                            st.lists(st.binary(max_size=20), max_size=4)), max_size=6)


def reply_bytes(ok: bool, payload: bytes | None) -> bytes:
    if payload is None:
        return ack_frame()
    return stx_frame(payload) if ok else nak_frame(payload)


@given(commands, cuts, st.integers(1, 20))
def test_valid_commands_decode_identically_however_split(frames, cut_points, chunk):
    stream = b''.join(command_frame(code, payload) for code, payload in frames)
    decoder = CommandDecoder(max_payload=80)
    decoded = [frame for piece in split(stream, cut_points) for frame in decoder.feed(piece)]
    assert decoded == frames
    assert decoder.buffered == 0
    sock = ScriptedSocket(stream, chunk)
    assert [read_command(sock, 80) for _ in frames] == frames


@given(replies, cuts, st.integers(1, 20))
def test_valid_replies_decode_identically_however_split(frames, cut_points, chunk):
    stream = b''.join(reply_bytes(ok, payload) for ok, payload in frames)
    decoder = ReplyDecoder(max_payload=80)
    decoded = [frame for piece in split(stream, cut_points) for frame in decoder.feed(piece)]
    assert decoded == frames
    sock = ScriptedSocket(stream, chunk)
    assert [read_reply(sock, 80) for _ in frames] == frames


@given(events, cuts, st.integers(1, 20))
def test_valid_events_decode_identically_however_split(frames, cut_points, chunk):
    stream = b''.join(event_frame(code, payload, blobs) for code, payload, blobs in frames)
    decoder = EventDecoder(max_payload=40, max_blob=20, max_blob_total=80)
    decoded = [frame for piece in split(stream, cut_points) for frame in decoder.feed(piece)]
    assert decoded == frames
    assert decoder.buffered == 0
    sock = ScriptedSocket(stream, chunk)
    assert [read_event(sock, 40, 20, 80) for _ in frames] == frames


def test_command_table_codes_fit_the_header():
    for code in command2code.values():
        assert CommandDecoder().feed(command_frame(code, b'[]')) == [(code, b'[]')]


# -- the buffered command reader -----------------------------------------------------

def _socket_pair_with(data: bytes) -> tuple[socket.socket, socket.socket]:
    left, right = socket.socketpair()
    left.sendall(data)
    left.shutdown(socket.SHUT_WR)
    right.settimeout(5.0)
    return left, right


def test_buffered_reader_splits_pipelined_commands() -> None:
    frames = [command_frame(0x41, b'[]'), command_frame(0x22, b'["1",false]'),
              command_frame(0x03, b'["", "' + b'x' * 200_000 + b'"]')]
    left, right = _socket_pair_with(b''.join(frames))
    with left, right:
        reader = BufferedCommandReader(right)
        assert reader.read() == (0x41, b'[]')
        assert reader.read() == (0x22, b'["1",false]')
        code, payload = reader.read()
        assert code == 0x03 and len(payload) == 200_008
        with pytest.raises(ConnectionClosed, match='closed by peer$'):
            reader.read()


def test_buffered_reader_refuses_garbage_and_oversize_before_reading_on() -> None:
    left, right = _socket_pair_with(b'GET / HTTP/1.1\r\n')
    with left, right, pytest.raises(BadStartByte):
        BufferedCommandReader(right).read()
    left, right = _socket_pair_with(command_frame(0x41, b'[' + b' ' * 100 + b']'))
    with left, right, pytest.raises(FrameTooLarge):
        BufferedCommandReader(right, max_payload=50).read()


def test_buffered_reader_reports_a_frame_cut_short() -> None:
    left, right = _socket_pair_with(command_frame(0x41, b'[]')[:5])
    with left, right, pytest.raises(ConnectionClosed, match='after 5 bytes'):
        BufferedCommandReader(right).read()
