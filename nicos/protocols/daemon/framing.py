"""Frame layouts of the daemon protocol: encoders, incremental decoders and
blocking socket readers.

Layouts (all integers big-endian):

* command (client -> daemon): ENQ, u16 code, u32 length, payload
* reply (daemon -> client): ACK alone; or STX/NAK, u32 length, payload
* event (daemon -> client): STX, u16 code, u8 blob count, u32 length, payload,
  then per blob: u32 length, raw bytes

Every announced length is checked against a limit *before* its bytes are
read, so a peer cannot make us buffer more than the limit.  Any violation is
a FrameError: the stream is out of step and the peer must be disconnected.
"""

import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any

from nicos.protocols.daemon import (
    ACK,
    ENQ,
    MAX_BLOB_SIZE,
    MAX_BLOB_TOTAL,
    MAX_BLOBS,
    MAX_COMMAND_PAYLOAD,
    MAX_EVENT_PAYLOAD,
    MAX_REPLY_PAYLOAD,
    NAK,
    STX,
    codec,
    command2code,
    event2code,
)

_COMMAND_HEADER = struct.Struct('>cHI')
_EVENT_HEADER = struct.Struct('>cHBI')
_LENGTH = struct.Struct('>I')

COMMAND_HEADER_SIZE = _COMMAND_HEADER.size  # 7
REPLY_HEADER_SIZE = 1 + _LENGTH.size  # 5
EVENT_HEADER_SIZE = _EVENT_HEADER.size  # 8
BLOB_HEADER_SIZE = _LENGTH.size  # 4

_ENQ_BYTE = ENQ[0]
_ACK_BYTE = ACK[0]
_STX_BYTE = STX[0]
_NAK_BYTE = NAK[0]


class FrameError(Exception):
    """The peer violated the framing; the connection must be dropped."""


class BadStartByte(FrameError):
    def __init__(self, got: int, expected: str) -> None:
        super().__init__(f'frame starts with byte 0x{got:02x}, expected {expected}')
        self.got = got


class FrameTooLarge(FrameError):
    def __init__(self, length: int, limit: int, what: str = 'frame') -> None:
        super().__init__(f'{what} of {length} bytes exceeds the limit of {limit}')
        self.length = length
        self.limit = limit


class ConnectionClosed(FrameError):
    """The peer closed the connection (possibly in the middle of a frame)."""


# -- encoders ---------------------------------------------------------------

def command_frame(code: int, payload: bytes) -> bytes:
    return _COMMAND_HEADER.pack(ENQ, code, len(payload)) + payload


def ack_frame() -> bytes:
    return ACK


def stx_frame(payload: bytes) -> bytes:
    return STX + _LENGTH.pack(len(payload)) + payload


def nak_frame(payload: bytes) -> bytes:
    return NAK + _LENGTH.pack(len(payload)) + payload


def event_frame_parts(code: int, payload: bytes, blobs: Sequence[Any] = ()) -> list[Any]:
    """The pieces of an event frame, for ``socket.sendmsg`` without joining.

    Blobs may be any C-contiguous buffer (bytes, bytearray, numpy arrays).
    """
    if len(blobs) > MAX_BLOBS:
        raise ValueError(f'an event carries at most {MAX_BLOBS} blobs, not {len(blobs)}')
    parts: list[Any] = [_EVENT_HEADER.pack(STX, code, len(blobs), len(payload)), payload]
    for blob in blobs:
        view = memoryview(blob).cast('B')  # counts bytes, not items
        parts.append(_LENGTH.pack(view.nbytes))
        parts.append(view)
    return parts


def event_frame(code: int, payload: bytes, blobs: Sequence[Any] = ()) -> bytes:
    return b''.join(event_frame_parts(code, payload, blobs))


def encode_command(name: str, args: Sequence[Any]) -> bytes:
    """A complete command frame; *args* are the positional arguments."""
    try:
        code = command2code[name]
    except KeyError:
        raise ValueError(f'unknown command {name!r}') from None
    return command_frame(code, codec.encode(list(args)))


def encode_reply(ok: bool, value: Any) -> bytes:
    """A reply frame: ACK for a successful None, STX with data, or NAK with a reason."""
    if not ok:
        return nak_frame(codec.encode(str(value)))
    if value is None:
        return ack_frame()
    return stx_frame(codec.encode(value))


def encode_event(name: str, data: Any, blobs: Sequence[Any] = ()) -> bytes:
    try:
        code = event2code[name]
    except KeyError:
        raise ValueError(f'unknown event {name!r}') from None
    return event_frame(code, codec.encode(data), blobs)


# -- header parsing, shared by the incremental and the blocking readers ------

def parse_command_header(header: bytes, max_payload: int) -> tuple[int, int]:
    """Return (code, payload length) of a 7-byte command header."""
    if header[0] != _ENQ_BYTE:
        raise BadStartByte(header[0], 'ENQ (0x05)')
    _, code, length = _COMMAND_HEADER.unpack(header)
    _check_length(length, max_payload, 'command payload')
    return code, length


def parse_event_header(header: bytes, max_payload: int) -> tuple[int, int, int]:
    """Return (code, blob count, payload length) of an 8-byte event header."""
    if header[0] != _STX_BYTE:
        raise BadStartByte(header[0], 'STX (0x03)')
    _, code, nblobs, length = _EVENT_HEADER.unpack(header)
    _check_length(length, max_payload, 'event payload')
    return code, nblobs, length


def parse_reply_start(start: int) -> bool | None:
    """Classify a reply's first byte: True (STX), False (NAK), None (bare ACK)."""
    if start == _ACK_BYTE:
        return None
    if start == _STX_BYTE:
        return True
    if start == _NAK_BYTE:
        return False
    raise BadStartByte(start, 'ACK, STX or NAK')


def _check_length(length: int, limit: int, what: str) -> None:
    if length > limit:
        raise FrameTooLarge(length, limit, what)


# -- incremental (sans-IO) decoders -------------------------------------------

class _IncrementalDecoder:
    """Collects fixed-size sections of a byte stream and hands each to a step.

    A step receives the completed section and returns the size and step of
    the next one.  At most one section is buffered, so memory is bounded by
    the largest section a step allows.  After a FrameError the decoder keeps
    raising it: the stream cannot be resynchronised.
    """

    def __init__(self) -> None:
        self._section = bytearray()
        self._error: FrameError | None = None
        self._out: list[Any] = []
        self._reset()

    def _reset(self) -> None:
        self._want = 1
        self._step: Callable[[bytes], None] = self._on_start

    def _on_start(self, data: bytes) -> None:
        raise NotImplementedError

    def _expect(self, size: int, step: Callable[[bytes], None]) -> None:
        self._want = size
        self._step = step

    @property
    def buffered(self) -> int:
        """Bytes held for frames not yet complete."""
        return len(self._section)

    def feed(self, data: bytes) -> list[Any]:
        """Consume *data* and return the frames it completed, in order."""
        if self._error is not None:
            raise self._error
        view = memoryview(data).cast('B')
        pos, end = 0, len(view)
        try:
            while True:
                need = self._want - len(self._section)
                if need > end - pos:
                    self._section += view[pos:]
                    break
                if self._section:
                    self._section += view[pos:pos + need]
                    section = bytes(self._section)
                    self._section.clear()
                else:  # the whole section is in this chunk: copy it only once
                    section = bytes(view[pos:pos + need])
                pos += need
                self._step(section)
        except FrameError as err:
            self._error = err
            self._section = bytearray()
            self._out = []
            raise
        frames, self._out = self._out, []
        return frames


class CommandDecoder(_IncrementalDecoder):
    """Splits the control stream a client sends into (code, payload) pairs.

    Command codes are not checked here; unknown ones are the dispatcher's business.
    """

    def __init__(self, max_payload: int = MAX_COMMAND_PAYLOAD) -> None:
        self.max_payload = max_payload
        super().__init__()

    def _on_start(self, data: bytes) -> None:
        # The start byte is checked on its own so garbage is refused at once.
        if data[0] != _ENQ_BYTE:
            raise BadStartByte(data[0], 'ENQ (0x05)')
        self._expect(COMMAND_HEADER_SIZE - 1, self._on_header)

    def _on_header(self, data: bytes) -> None:
        self._code, length = parse_command_header(ENQ + data, self.max_payload)
        self._expect(length, self._on_payload)

    def _on_payload(self, data: bytes) -> None:
        self._out.append((self._code, data))
        self._reset()


class ReplyDecoder(_IncrementalDecoder):
    """Splits the control stream a daemon sends into (ok, payload) pairs.

    A bare ACK gives (True, None).
    """

    def __init__(self, max_payload: int = MAX_REPLY_PAYLOAD) -> None:
        self.max_payload = max_payload
        super().__init__()

    def _on_start(self, data: bytes) -> None:
        ok = parse_reply_start(data[0])
        if ok is None:
            self._out.append((True, None))
            return
        self._ok = ok
        self._expect(_LENGTH.size, self._on_length)

    def _on_length(self, data: bytes) -> None:
        (length,) = _LENGTH.unpack(data)
        _check_length(length, self.max_payload, 'reply payload')
        self._expect(length, self._on_payload)

    def _on_payload(self, data: bytes) -> None:
        self._out.append((self._ok, data))
        self._reset()


class EventDecoder(_IncrementalDecoder):
    """Splits an event stream into (code, payload, blobs) triples.

    Event codes are not checked here.  Completed blobs of the current event
    are held until the event is complete; their total is bounded too.
    """

    def __init__(self, max_payload: int = MAX_EVENT_PAYLOAD, max_blob: int = MAX_BLOB_SIZE,
                 max_blob_total: int = MAX_BLOB_TOTAL) -> None:
        self.max_payload = max_payload
        self.max_blob = max_blob
        self.max_blob_total = max_blob_total
        super().__init__()

    @property
    def buffered(self) -> int:
        return len(self._section) + self._held

    def _reset(self) -> None:
        super()._reset()
        self._held = 0
        self._payload = b''
        self._blobs: list[bytes] = []

    def _on_start(self, data: bytes) -> None:
        if data[0] != _STX_BYTE:
            raise BadStartByte(data[0], 'STX (0x03)')
        self._expect(EVENT_HEADER_SIZE - 1, self._on_header)

    def _on_header(self, data: bytes) -> None:
        self._code, self._nblobs, length = parse_event_header(STX + data, self.max_payload)
        self._expect(length, self._on_payload)

    def _on_payload(self, data: bytes) -> None:
        self._payload = data
        self._held = len(data)
        self._next_blob_or_finish()

    def _next_blob_or_finish(self) -> None:
        if len(self._blobs) < self._nblobs:
            self._expect(BLOB_HEADER_SIZE, self._on_blob_length)
        else:
            self._out.append((self._code, self._payload, self._blobs))
            self._reset()

    def _on_blob_length(self, data: bytes) -> None:
        (length,) = _LENGTH.unpack(data)
        _check_blob_length(length, self._held - len(self._payload), self.max_blob,
                           self.max_blob_total)
        self._expect(length, self._on_blob)

    def _on_blob(self, data: bytes) -> None:
        self._blobs.append(data)
        self._held += len(data)
        self._next_blob_or_finish()


def _check_blob_length(length: int, held: int, max_blob: int, max_total: int) -> None:
    _check_length(length, max_blob, 'blob')
    if held + length > max_total:
        raise FrameTooLarge(held + length, max_total, 'blobs of one event')


# -- blocking readers -----------------------------------------------------------

# Buffers start at most this large and grow only as data actually arrives, so a
# peer announcing a big frame and then stalling does not pin the whole size.
_INITIAL_RECEIVE_BUFFER = 256 * 1024


def recv_exact(sock: socket.socket, size: int) -> bytes:
    """Receive exactly *size* bytes; ConnectionClosed on EOF.

    Socket errors and timeouts (OSError) propagate unchanged.
    """
    if size <= 0:
        return b''
    buffer = bytearray(min(size, _INITIAL_RECEIVE_BUFFER))
    received = 0
    while True:
        with memoryview(buffer) as view:
            while received < len(buffer):
                count = sock.recv_into(view[received:])
                if count == 0:
                    raise ConnectionClosed(
                        f'connection closed by peer after {received} of {size} bytes'
                        if received else 'connection closed by peer')
                received += count
        if received == size:
            return bytes(buffer)
        buffer.extend(bytes(min(size, 2 * len(buffer)) - len(buffer)))


def read_command(sock: socket.socket,
                 max_payload: int = MAX_COMMAND_PAYLOAD) -> tuple[int, bytes]:
    code, length = parse_command_header(recv_exact(sock, COMMAND_HEADER_SIZE), max_payload)
    return code, recv_exact(sock, length)


def read_reply(sock: socket.socket,
               max_payload: int = MAX_REPLY_PAYLOAD) -> tuple[bool, bytes | None]:
    # A bare ACK is complete after its first byte; asking for a whole 5-byte
    # header would wait for bytes that never come.
    ok = parse_reply_start(recv_exact(sock, 1)[0])
    if ok is None:
        return True, None
    (length,) = _LENGTH.unpack(recv_exact(sock, _LENGTH.size))
    _check_length(length, max_payload, 'reply payload')
    return ok, recv_exact(sock, length)


def read_event(sock: socket.socket, max_payload: int = MAX_EVENT_PAYLOAD,
               max_blob: int = MAX_BLOB_SIZE,
               max_blob_total: int = MAX_BLOB_TOTAL) -> tuple[int, bytes, list[bytes]]:
    code, nblobs, length = parse_event_header(recv_exact(sock, EVENT_HEADER_SIZE), max_payload)
    payload = recv_exact(sock, length)
    blobs: list[bytes] = []
    held = 0
    for _ in range(nblobs):
        (blob_length,) = _LENGTH.unpack(recv_exact(sock, BLOB_HEADER_SIZE))
        _check_blob_length(blob_length, held, max_blob, max_blob_total)
        blobs.append(recv_exact(sock, blob_length))
        held += blob_length
    return code, payload, blobs


class BufferedCommandReader:
    """Reads command frames from a blocking socket with one ``recv`` per frame.

    :func:`read_command` asks for the header and then the payload, two system calls
    for every command; this reader takes whatever has arrived (a whole small
    command, or several pipelined ones) and keeps the rest for the next call.  It
    never holds more than one frame plus one receive chunk.
    """

    CHUNK = 64 * 1024

    def __init__(self, sock: socket.socket, max_payload: int = MAX_COMMAND_PAYLOAD) -> None:
        self._sock = sock
        self._max_payload = max_payload
        self._buffer = bytearray()

    def _fill(self, size: int) -> None:
        """Receive until at least *size* bytes are buffered; ConnectionClosed on EOF."""
        while len(self._buffer) < size:
            chunk = self._sock.recv(max(self.CHUNK, min(size - len(self._buffer),
                                                        _INITIAL_RECEIVE_BUFFER)))
            if not chunk:
                raise ConnectionClosed(
                    f'connection closed by peer after {len(self._buffer)} bytes of a frame'
                    if self._buffer else 'connection closed by peer')
            self._buffer += chunk

    def read(self) -> tuple[int, bytes]:
        """The next (code, payload); FrameError or OSError like :func:`read_command`."""
        self._fill(1)
        if self._buffer[0] != _ENQ_BYTE:  # refused before waiting for a whole header
            raise BadStartByte(self._buffer[0], 'ENQ (0x05)')
        self._fill(COMMAND_HEADER_SIZE)
        code, length = parse_command_header(bytes(self._buffer[:COMMAND_HEADER_SIZE]),
                                            self._max_payload)
        end = COMMAND_HEADER_SIZE + length
        self._fill(end)
        payload = bytes(self._buffer[COMMAND_HEADER_SIZE:end])
        del self._buffer[:end]
        return code, payload
