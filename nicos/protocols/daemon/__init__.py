"""Wire constants of the NICOS daemon protocol, version 24.

Shared by the daemon and every client; deliberately stdlib-only and free of
logic beyond table lookups so that importing it costs nothing.
"""

PROTO_VERSION = 24
# Servers announcing one of these versions speak a protocol this code understands.
COMPATIBLE_PROTO_VERSIONS = frozenset({23, 24})

DEFAULT_PORT = 1301

# Control bytes that open a frame (see framing.py for the layouts).
ENQ = b'\x05'
ACK = b'\x06'
STX = b'\x03'  # 0x03 on purpose: upstream uses it, not ASCII STX (0x02)
NAK = b'\x15'

# The client id opens both connections of a client session.
CLIENT_ID_LEN = 16

command2code: dict[str, int] = {
    # script control
    'start': 0x01,
    'simulate': 0x02,
    'queue': 0x03,
    'unqueue': 0x04,
    'update': 0x05,
    'break': 0x11,
    'continue': 0x12,
    'stop': 0x13,
    'emergency': 0x14,
    'finish': 0x15,
    # code evaluation
    'exec': 0x21,
    'eval': 0x22,
    # watch expressions
    'watch': 0x31,
    'unwatch': 0x32,
    # state queries
    'getversion': 0x41,
    'getstatus': 0x42,
    'getmessages': 0x43,
    'getscript': 0x44,
    'gethistory': 0x45,
    'getcachekeys': 0x46,
    'gettrace': 0x47,
    'getdataset': 0x48,
    # miscellaneous
    'complete': 0x51,
    'transfer': 0x52,
    'debug': 0x53,
    'debuginput': 0x54,
    # connection management
    'eventmask': 0x61,
    'unlock': 0x62,
    'quit': 0x63,
    'authenticate': 0x64,
    'eventunmask': 0x65,
    'rearrange': 0x66,
    'keepalive': 0x67,
    # extensions of this implementation (never sent by upstream clients)
    'history': 0x81,
}
code2command: dict[int, str] = {code: name for name, code in command2code.items()}

event2code: dict[str, int] = {
    'message': 0x1001,
    'request': 0x1002,
    'processing': 0x1003,
    'blocked': 0x1004,
    'status': 0x1005,
    'watch': 0x1006,
    'mode': 0x1007,
    'cache': 0x1008,
    'dataset': 0x1009,
    'datapoint': 0x100A,
    'datacurve': 0x100B,
    # 0x100C is unused upstream; never send it, upstream clients would disconnect.
    'livedata': 0x100D,
    'simresult': 0x100E,
    'showhelp': 0x100F,
    'clientexec': 0x1010,
    'watchdog': 0x1011,
    'debugging': 0x1012,
    'plugplay': 0x1013,
    'setup': 0x1014,
    'device': 0x1015,
    'experiment': 0x1016,
    'prompt': 0x1017,
    'updated': 0x1018,
    'rearranged': 0x1019,
    'eta': 0x101A,
    'simmessage': 0x101B,
    'done': 0x101C,
    'promptdone': 0x101D,
}
code2event: dict[int, str] = {code: name for name, code in event2code.items()}

# Events whose raw blobs are handed to the application.
BLOB_EVENTS = frozenset({'livedata'})

# Commands that a view-only client must not send.  'emergency' and 'eval' are
# intentionally absent, as upstream.
ACTIVE_COMMANDS = frozenset({
    'start', 'queue', 'unqueue', 'rearrange', 'update', 'break', 'continue',
    'stop', 'finish', 'exec',
})

# Execution status (first element of the 'status' event).
STATUS_IDLEEXC = -2
STATUS_IDLE = -1
STATUS_RUNNING = 0
STATUS_INBREAK = 1
STATUS_STOPPING = 2

# Break and stop levels; 4 is a valid level without a name.
BREAK_AFTER_LINE = 1
BREAK_AFTER_STEP = 2
BREAK_NOW = 3
BREAK_IMMEDIATE = 5

# User levels.
GUEST = 0
USER = 10
ADMIN = 20
level_names: dict[int, str] = {GUEST: 'guest', USER: 'user', ADMIN: 'admin'}
_levels_by_name = {name: level for level, name in level_names.items()}


def parse_level(value: str | int) -> int:
    """Return the user level given as a config name ('guest', ...) or number."""
    if isinstance(value, str):
        level = _levels_by_name.get(value.strip().lower())
        if level is not None:
            return level
    elif isinstance(value, int) and not isinstance(value, bool) and value in level_names:
        return value
    raise ValueError(f'invalid user level {value!r}, use one of guest, user, admin or 0, 10, 20')


# Simulation (ETA) states.
SIM_PENDING = 1
SIM_RUNNING = 2
SIM_SUCCESS = 3
SIM_FAILED = 4

# Levels of message records; the standard logging values plus ACTION and INPUT.
DEBUG = 10
INFO = 20
ACTION = 21
INPUT = 26
WARNING = 30
ERROR = 40
CRITICAL = 50

# Our extension of the authenticate credentials: a login made only to send an
# emergency stop says so, and the daemon keeps a few slots for such logins.
PURPOSE_KEY = 'purpose'
PURPOSE_EMERGENCY = 'emergency'
EMERGENCY_ONLY_COMMANDS = frozenset({'emergency', 'quit', 'keepalive', 'getversion'})

# Size limits.  Upstream trusts the u32 length fields; we do not.
MAX_COMMAND_PAYLOAD = 16 * 1024 * 1024  # daemon default, configurable
MAX_REPLY_PAYLOAD = 64 * 1024 * 1024
MAX_EVENT_PAYLOAD = 64 * 1024 * 1024
MAX_BLOBS = 255  # the u8 count field of an event frame
MAX_BLOB_SIZE = 256 * 1024 * 1024  # one live-data buffer
MAX_BLOB_TOTAL = 512 * 1024 * 1024  # all blobs of one event together
