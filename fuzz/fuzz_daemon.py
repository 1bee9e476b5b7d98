#!/usr/bin/env python
"""Coverage-guided fuzzing of the daemon's input handling with atheris (libFuzzer).

    python fuzz/fuzz_daemon.py TARGET [libFuzzer options] [CORPUS_DIR ...]

TARGET is one of:

``frames``
    The frame readers: the incremental decoders and the blocking socket readers the
    daemon uses must split the input into the same frames and fail with the same
    error; a decoder never buffers more than its largest allowed section.
``codec``
    ``codec.decode`` (with and without the ``transfer`` exception) and the bytes
    pickle matcher: nothing but CodecError may escape; an accepted pickle decodes to
    exactly what ``pickle.loads`` gives (safe, as it matched the whitelist).
``dispatch``
    ``CommandHandler.handle`` with the strict controller and the rules of
    test/unit/test_fuzz_dispatch.py: exactly one reply per frame, only documented
    refusals, no internal error, level/state/control rules hold.

A failed check raises, and libFuzzer stops and writes the input to
``crash-<sha1>``; re-run a single input with ``python fuzz/fuzz_daemon.py TARGET
crash-...``. Memory growth is caught by libFuzzer's ``-rss_limit_mb`` and
``-malloc_limit_mb``. Seeds are written into the first corpus directory when it is
empty. See fuzz/README.md.

Input layouts (so that seeds can be written by hand):

- frames: byte 0 selects the reader (0 command, 1 reply, 2 event), byte 1 is the
  receive chunk size of the blocking reader; the rest is the stream.
- codec: byte 0 bit 0 = allow transfer bytes; the rest is the payload.
- dispatch: byte 0 = user (alice admin, bob user, carol user, gina guest), byte 1 =
  script status; then records of u8 user, u16 code, u16 length, payload.
"""

from __future__ import annotations

import json
import logging
import pickle
import struct
import sys
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test" / "unit"))

with atheris.instrument_imports(include=["nicos", "nicos_daemon"]):
    import test_fuzz_dispatch as oracle

    from nicos.protocols.daemon import code2command, command2code
    from nicos.protocols.daemon.codec import CodecError, decode, decode_transfer_pickle
    from nicos.protocols.daemon.framing import (
        BadStartByte,
        CommandDecoder,
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
    from nicos_daemon.access import ControlArbiter
    from nicos_daemon.handler import CommandHandler

MAX_PAYLOAD = 96
MAX_BLOB = 48
MAX_BLOB_TOTAL = 120
PAD = b"\x00" * 2048  # see test/unit/test_fuzz_framing.py


class ChunkedSocket:
    def __init__(self, data: bytes, chunk: int) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.chunk = chunk

    def recv_into(self, buffer, nbytes: int = 0) -> int:  # noqa: ANN001
        count = min(nbytes or len(buffer), len(buffer), self.chunk, len(self.data) - self.pos)
        buffer[:count] = self.data[self.pos:self.pos + count]
        self.pos += count
        return count


READERS = [
    (lambda: CommandDecoder(MAX_PAYLOAD), lambda s: read_command(s, MAX_PAYLOAD),
     MAX_PAYLOAD),
    (lambda: ReplyDecoder(MAX_PAYLOAD), lambda s: read_reply(s, MAX_PAYLOAD), MAX_PAYLOAD),
    (lambda: EventDecoder(MAX_PAYLOAD, MAX_BLOB, MAX_BLOB_TOTAL),
     lambda s: read_event(s, MAX_PAYLOAD, MAX_BLOB, MAX_BLOB_TOTAL),
     MAX_PAYLOAD + MAX_BLOB_TOTAL),
]


def fuzz_frames(data: bytes) -> None:
    if len(data) < 2:
        return
    make_decoder, read, bound = READERS[data[0] % 3]
    chunk = data[1] % 64 + 1
    stream = data[2:] + PAD
    decoder = make_decoder()
    frames_a: list = []
    error_a = None
    for index in range(len(stream)):
        try:
            frames_a += decoder.feed(stream[index:index + 1])
        except FrameError as err:
            error_a = type(err)
            break
        assert decoder.buffered <= bound, decoder.buffered
    assert error_a in (BadStartByte, FrameTooLarge), error_a
    sock = ChunkedSocket(stream, chunk)
    frames_b: list = []
    error_b = None
    for _ in range(len(stream) + 1):
        try:
            frames_b.append(read(sock))
        except FrameError as err:
            error_b = type(err)
            break
    assert frames_a == frames_b, (frames_a, frames_b)
    assert error_a is error_b, (error_a, error_b)


def fuzz_codec(data: bytes) -> None:
    if not data:
        return
    allow = bool(data[0] & 1)
    payload = data[1:]
    try:
        decode(payload, allow_transfer_bytes=allow)
    except CodecError:
        pass
    text = payload.decode("latin-1")
    try:
        result = decode_transfer_pickle(text)
    except CodecError:
        return
    assert type(result) is bytes
    assert pickle.loads(payload) == result  # whitelisted opcodes only: safe


USERS = [oracle.ALICE, oracle.BOB, oracle.CAROL, oracle.GINA]
STATUSES = [(-1, -1), (-2, 3), (0, 1), (1, 2), (2, 5)]
RECORD = struct.Struct(">BHH")


def fuzz_dispatch(data: bytes) -> None:
    if len(data) < 2:
        return
    controller = oracle.StrictController()
    status = STATUSES[data[1] % len(STATUSES)]
    controller.status = status
    arbiter = ControlArbiter()
    handlers = {user: CommandHandler(controller, arbiter, user, oracle.Events(),
                                     peer="127.0.0.1", version="9.9") for user in USERS}
    pos = 2
    for _ in range(16):
        if pos + RECORD.size > len(data):
            return
        who, code, length = RECORD.unpack_from(data, pos)
        pos += RECORD.size
        payload = data[pos:pos + length]
        pos += length
        user = USERS[who % len(USERS)]
        holder_before = arbiter.holder
        reply = handlers[user].handle(code, payload)
        ok, value = oracle.single_reply(reply.frame)
        assert ok == reply.ok
        name = code2command.get(code)
        if not ok:
            assert oracle.is_documented_refusal(value), (name, value)
            if reply.close:
                return
            continue
        assert name is not None and name != "authenticate"
        assert user.level >= oracle.required_level(name), (user, name)
        if name in oracle.NEEDS_RUNNING:
            assert status[0] >= 0
        if name in oracle.NEEDS_IDLE:
            assert status[0] < 0
        if name in oracle.CONTROL_COMMANDS and user.level < oracle.ADMIN and \
                holder_before is not None:
            assert holder_before.level <= user.level
        assert reply.close == (name == "quit")
        if reply.close:
            return


TARGETS = {"frames": fuzz_frames, "codec": fuzz_codec, "dispatch": fuzz_dispatch}


# -- seeds ------------------------------------------------------------------------------

def seeds(target: str) -> list[bytes]:
    args = {
        "start": ["", "print(1)"], "queue": ["a.py", "sleep(1)\n"], "stop": [2],
        "break": [1], "eval": ["1", False], "getmessages": ["*"], "eventmask": [["watch"]],
        "gethistory": ["x/value", 0, 1.5, None], "rearrange": [["a", "b"]],
        "update": ["x\n", "why", None], "transfer": [oracle.TRANSFER_BYTES],
        "watch": [["x:g"]], "complete": ["mo", "mo"], "getdataset": ["*"],
        "exec": ["x = 1"], "unqueue": ["*"], "simulate": ["", "1", None],
        "getcachekeys": ["mono"], "history": [10],
    }
    if target == "frames":
        return [bytes([0, 7]) + command_frame(0x22, b'["1",false]'),
                bytes([1, 3]) + b"\x06" + stx_frame(b'"3.12.2"') + nak_frame(b'"no"'),
                bytes([2, 5]) + event_frame(0x1005, b"[0,3]") +
                event_frame(0x100D, b"{}", [b"abc", b""])]
    if target == "codec":
        return [b"\x00" + json.dumps(["x", 1, {"a": [None]}]).encode(),
                b"\x01" + json.dumps([oracle.TRANSFER_BYTES]).encode(),
                b"\x00" + pickle.dumps(b"abc", 2)]
    records = []
    for user in range(4):
        for name, code in sorted(command2code.items()):
            payload = json.dumps(args.get(name, [])).encode()
            records.append(bytes([user, user]) + RECORD.pack(user, code, len(payload)) +
                           payload)
    return records


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(TARGETS)}}} [libFuzzer options] "
                 "[corpus dir ...]")
    target = sys.argv.pop(1)
    # The handler logs every refusal; millions of lines would slow the run down and
    # bury libFuzzer's crash report.
    logging.disable(logging.CRITICAL)
    corpus = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")]
    if corpus and corpus[0].is_dir() and not any(corpus[0].iterdir()):
        for index, seed in enumerate(seeds(target)):
            (corpus[0] / f"seed-{index:03d}").write_bytes(seed)
    atheris.Setup(sys.argv, TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
