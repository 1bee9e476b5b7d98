"""Pure helpers for the GUI: parsing daemon data, names and colours.

No Qt here, so that the rules can be tested without a display.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from nicos.protocols.daemon import (
    ACTION,
    DEBUG,
    ERROR,
    INFO,
    INPUT,
    STATUS_IDLE,
    STATUS_IDLEEXC,
    STATUS_INBREAK,
    STATUS_RUNNING,
    STATUS_STOPPING,
    WARNING,
)

# Device status codes (as in nicos.core.status; repeated here because the GUI
# must not depend on the instrument layer, only on what travels on the wire).
DEV_OK = 200
DEV_WARN = 210
DEV_BUSY = 220
DEV_NOTREACHED = 230
DEV_DISABLED = 235
DEV_ERROR = 240
DEV_UNKNOWN = 999

DEVICE_STATUS_NAMES: dict[int, str] = {
    DEV_OK: 'ok', DEV_WARN: 'warning', DEV_BUSY: 'busy', DEV_NOTREACHED: 'not reached',
    DEV_DISABLED: 'disabled', DEV_ERROR: 'error', DEV_UNKNOWN: 'unknown',
}

# Background colours of device status cells.
DEVICE_STATUS_COLOURS: dict[int, str] = {
    DEV_OK: '#c8f0c8',        # green
    DEV_WARN: '#fff0a0',      # yellow
    DEV_BUSY: '#ffd080',      # orange
    DEV_NOTREACHED: '#ffb0b0',
    DEV_DISABLED: '#d8d8d8',
    DEV_ERROR: '#ff8080',     # red
    DEV_UNKNOWN: '#d0d0ff',
}

IDLE_STATES = (STATUS_IDLE, STATUS_IDLEEXC)

# Daemon execution states: word and (background, foreground) colours.
DAEMON_STATES: dict[int, tuple[str, str, str]] = {
    STATUS_IDLE: ('idle', '#c8f0c8', '#000000'),
    STATUS_IDLEEXC: ('idle', '#c8f0c8', '#000000'),
    STATUS_RUNNING: ('running', '#ffd080', '#000000'),
    STATUS_INBREAK: ('break', '#fff060', '#000000'),
    STATUS_STOPPING: ('stopping', '#ff8080', '#000000'),
}

# Message levels: name and text colour in the console.
MESSAGE_LEVELS: dict[int, tuple[str, str]] = {
    DEBUG: ('debug', '#808080'),
    INFO: ('info', '#000000'),
    ACTION: ('action', '#406080'),
    INPUT: ('input', '#0000a0'),
    WARNING: ('warning', '#b06000'),
    ERROR: ('error', '#d00000'),
    50: ('critical', '#d00000'),
}


def daemon_state(status: int) -> tuple[str, str, str]:
    """(word, background, foreground) for an execution status."""
    return DAEMON_STATES.get(status, (f'status {status}', '#d0d0d0', '#000000'))


def message_colour(level: int) -> str:
    """Text colour of a message of *level* (levels between the named ones
    take the colour of the next lower named level)."""
    best = DEBUG
    for known in MESSAGE_LEVELS:
        if known <= level and known > best:
            best = known
    return MESSAGE_LEVELS.get(best, MESSAGE_LEVELS[INFO])[1]


def parse_value(text: str) -> Any:
    """A cache value (the repr of the device value) as a Python value; only
    literals are accepted, anything else stays the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_status(value: Any) -> tuple[int, str] | None:
    """``(code, text)`` from a parsed status value, or None if it is none."""
    if isinstance(value, str):
        value = parse_value(value)
    if isinstance(value, list | tuple) and len(value) == 2 and isinstance(value[0], int) \
            and not isinstance(value[0], bool):
        return int(value[0]), str(value[1])
    return None


def device_status_colour(code: int) -> str:
    return DEVICE_STATUS_COLOURS.get(code, DEVICE_STATUS_COLOURS[DEV_UNKNOWN])


def device_status_text(status: tuple[int, str]) -> str:
    code, text = status
    name = DEVICE_STATUS_NAMES.get(code, f'status {code}')
    return f'{name}: {text}' if text and text != name else name


def format_value(value: Any, fmtstr: str = '') -> str:
    """A device value for people: numbers through *fmtstr*, sequences item by item."""
    if isinstance(value, list | tuple):
        return ', '.join(format_value(item, fmtstr) for item in value)
    if fmtstr and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return fmtstr % value
        except (TypeError, ValueError):
            pass
    if isinstance(value, float):
        return f'{value:.6g}'
    return str(value)


def to_float(value: Any) -> float | None:
    """The value as a number for plotting, or None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple) and value:
        return to_float(value[0])
    return None


_SCRIPT_FRAME = re.compile(r'File "<script>", line (\d+)')
_SCRIPT_LINE = re.compile(r'\bin script, line (\d+)')


def error_line(text: str, exc_text: str | None = None) -> int | None:
    """The script line an error message refers to: the innermost frame of the
    script in the traceback, or the line named in a syntax error message."""
    if exc_text:
        frames = _SCRIPT_FRAME.findall(exc_text)
        if frames:
            return int(frames[-1])
    for source in (text, exc_text or ''):
        match = _SCRIPT_LINE.search(source) or _SCRIPT_FRAME.search(source)
        if match:
            return int(match.group(1))
    return None


def split_watch_key(key: str) -> tuple[str, str]:
    """``'expr:group'`` -> ``('expr', 'group')``."""
    expr, sep, group = key.rpartition(':')
    if not sep:
        return key, 'default'
    return expr, group


def watch_key(expr: str) -> str:
    """The daemon's key for *expr* in the default group.  The group is always
    given, so that an expression containing ':' (slices, dicts) is kept whole."""
    return f'{expr}:default'


def script_lines(text: str) -> int:
    return len(text.rstrip('\n').split('\n')) if text else 0


def request_title(request: dict[str, Any] | None) -> str:
    """A short description of a request for labels and lists."""
    if not request:
        return ''
    name = request.get('name')
    if name:
        return str(name)
    lines = [line.strip() for line in str(request.get('script') or '').split('\n')]
    code = [line for line in lines if line and not line.startswith('#')]
    if not code:
        return str(request.get('reqid') or '')[:8]
    first = code[0] if len(code[0]) <= 60 else code[0][:57] + '...'
    return first + (' ...' if len(code) > 1 else '')


__all__ = [
    'DAEMON_STATES', 'DEVICE_STATUS_COLOURS', 'DEVICE_STATUS_NAMES', 'ERROR', 'IDLE_STATES',
    'INPUT', 'MESSAGE_LEVELS', 'WARNING', 'daemon_state', 'device_status_colour',
    'device_status_text', 'error_line', 'format_value', 'message_colour', 'parse_status',
    'parse_value', 'request_title', 'script_lines', 'split_watch_key', 'to_float', 'watch_key',
]
