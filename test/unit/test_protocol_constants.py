"""The code tables and constants of nicos.protocols.daemon."""

import pytest

from nicos.protocols import daemon
from nicos.protocols.daemon import (
    ACTIVE_COMMANDS,
    ADMIN,
    BLOB_EVENTS,
    GUEST,
    USER,
    code2command,
    code2event,
    command2code,
    event2code,
    level_names,
    parse_level,
)


def test_byte_values():
    assert (daemon.ENQ, daemon.ACK, daemon.STX, daemon.NAK) == (b'\x05', b'\x06', b'\x03', b'\x15')
    assert daemon.PROTO_VERSION == 24
    assert daemon.COMPATIBLE_PROTO_VERSIONS == {23, 24}
    assert daemon.CLIENT_ID_LEN == 16


@pytest.mark.parametrize('name, code', [
    ('start', 0x01), ('simulate', 0x02), ('queue', 0x03), ('unqueue', 0x04), ('update', 0x05),
    ('break', 0x11), ('continue', 0x12), ('stop', 0x13), ('emergency', 0x14), ('finish', 0x15),
    ('exec', 0x21), ('eval', 0x22), ('watch', 0x31), ('unwatch', 0x32),
    ('getversion', 0x41), ('getstatus', 0x42), ('getmessages', 0x43), ('getscript', 0x44),
    ('gethistory', 0x45), ('getcachekeys', 0x46), ('gettrace', 0x47), ('getdataset', 0x48),
    ('complete', 0x51), ('transfer', 0x52), ('debug', 0x53), ('debuginput', 0x54),
    ('eventmask', 0x61), ('unlock', 0x62), ('quit', 0x63), ('authenticate', 0x64),
    ('eventunmask', 0x65), ('rearrange', 0x66), ('keepalive', 0x67),
])
def test_command_codes(name, code):
    assert command2code[name] == code
    assert code2command[code] == name


def test_command_table_is_complete_and_bijective():
    assert len(command2code) == 34  # the 33 of protocol 24 plus our 'history'
    assert len(code2command) == len(command2code)


def test_event_codes_cover_the_range_except_the_unused_code():
    expected = set(range(0x1001, 0x101E)) - {0x100C}
    assert set(code2event) == expected
    assert len(event2code) == len(code2event) == 28
    assert event2code['message'] == 0x1001
    assert event2code['status'] == 0x1005
    assert event2code['livedata'] == 0x100D
    assert event2code['done'] == 0x101C
    assert event2code['promptdone'] == 0x101D
    assert all(code2event[code] == name for name, code in event2code.items())


def test_blob_and_active_sets():
    assert BLOB_EVENTS == {'livedata'}
    assert ACTIVE_COMMANDS == {'start', 'queue', 'unqueue', 'rearrange', 'update', 'break',
                               'continue', 'stop', 'finish', 'exec'}
    assert ACTIVE_COMMANDS <= set(command2code)


def test_status_break_and_sim_constants():
    assert (daemon.STATUS_IDLEEXC, daemon.STATUS_IDLE, daemon.STATUS_RUNNING,
            daemon.STATUS_INBREAK, daemon.STATUS_STOPPING) == (-2, -1, 0, 1, 2)
    assert (daemon.BREAK_AFTER_LINE, daemon.BREAK_AFTER_STEP, daemon.BREAK_NOW,
            daemon.BREAK_IMMEDIATE) == (1, 2, 3, 5)
    assert (daemon.SIM_PENDING, daemon.SIM_RUNNING, daemon.SIM_SUCCESS,
            daemon.SIM_FAILED) == (1, 2, 3, 4)
    assert (daemon.DEBUG, daemon.INFO, daemon.ACTION, daemon.INPUT, daemon.WARNING,
            daemon.ERROR, daemon.CRITICAL) == (10, 20, 21, 26, 30, 40, 50)


def test_limits():
    assert daemon.MAX_COMMAND_PAYLOAD == 16 * 1024 * 1024
    assert daemon.MAX_REPLY_PAYLOAD >= daemon.MAX_COMMAND_PAYLOAD
    assert daemon.MAX_EVENT_PAYLOAD >= daemon.MAX_COMMAND_PAYLOAD
    assert daemon.MAX_BLOBS == 255


@pytest.mark.parametrize('given, level', [
    ('guest', GUEST), ('user', USER), ('admin', ADMIN), (' Admin ', ADMIN),
    (0, GUEST), (10, USER), (20, ADMIN),
])
def test_parse_level_accepts(given, level):
    assert parse_level(given) == level


@pytest.mark.parametrize('given', ['root', '', '10', 5, -1, 30, True, None, 10.0])
def test_parse_level_rejects(given):
    with pytest.raises(ValueError, match='invalid user level'):
        parse_level(given)


def test_level_names():
    assert level_names == {0: 'guest', 10: 'user', 20: 'admin'}
