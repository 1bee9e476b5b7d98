"""Text for the terminal: message records, announcements, queue and script views.

Everything the daemon sends is shown through :func:`clean` first, so that a script
cannot send terminal control sequences (retitle, move the cursor, remap keys) to
every client's terminal.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from nicos.protocols.daemon import (
    ACTION,
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

_SGR = {
    'error': '1;31',
    'warning': '33',
    'input': '34',
    'notice': '1;36',
    'dim': '2',
    'ok': '32',
    'bold': '1',
}

# C0 controls except tab and newline, DEL, and the C1 range.
_CONTROL = re.compile('[\x00-\x08\x0b-\x1f\x7f-\x9f]')

STATE_NAMES = {
    STATUS_IDLE: 'idle',
    STATUS_IDLEEXC: 'idle',
    STATUS_RUNNING: 'running',
    STATUS_INBREAK: 'break',
    STATUS_STOPPING: 'stopping',
}


def clean(text: str) -> str:
    """*text* with control characters made visible (``ESC`` becomes ``^[``)."""
    return _CONTROL.sub(_caret, text)


def _caret(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return '^' + chr(code + 0x40)
    return f'<{code:#04x}>'


class Painter:
    """ANSI colouring, or none."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, role: str) -> str:
        if not self.color or not text:
            return text
        # Colour each line separately: prompt_toolkit redraws between lines.
        code = _SGR[role]
        return '\n'.join(f'\x1b[{code}m{line}\x1b[0m' if line else line
                         for line in text.split('\n'))


def state_name(status: int) -> str:
    return STATE_NAMES.get(status, f'status {status}')


def format_record(record: Any, paint: Painter, *, verbose: bool = False) -> str | None:
    """A message record as terminal text, or None when it is not shown
    (ACTION notes are shown in the toolbar; DEBUG only when *verbose*)."""
    if not isinstance(record, list) or len(record) < 5:
        return None
    logger, _created, level, text, exc_text = record[:5]
    if not isinstance(level, int) or not isinstance(text, str):
        return None
    if level == ACTION or (level < INFO and not verbose):
        return None
    text = clean(text.rstrip('\n'))
    if isinstance(logger, str) and logger not in ('nicos', '') and level != INPUT:
        text = f'{clean(logger)}: {text}'
    if level == INPUT:
        return paint(text, 'input')
    if level >= ERROR:
        label = 'CRITICAL' if level > ERROR else 'ERROR'
        shown = paint(f'{label}: {text}', 'error')
        if isinstance(exc_text, str) and exc_text.strip():
            trace = '\n'.join('    ' + line for line in clean(exc_text.rstrip('\n')).split('\n'))
            shown += '\n' + paint(trace, 'dim')
        return shown
    if level >= WARNING:
        return paint(f'WARNING: {text}', 'warning')
    if level < INFO:
        return paint(text, 'dim')
    return text


def record_time(record: Any) -> str:
    try:
        return time.strftime('%H:%M:%S', time.localtime(float(record[1])))
    except (TypeError, ValueError, IndexError, OverflowError):
        return '--:--:--'


def notice(text: str, paint: Painter) -> str:
    """An announcement of the client itself (state changes, connection)."""
    return paint(f'--- {text}', 'notice')


def request_label(request: Mapping[str, Any]) -> str:
    name = request.get('name')
    if isinstance(name, str) and name:
        return clean(name)
    script = request.get('script')
    if isinstance(script, str) and script.strip():
        first = script.strip().split('\n', 1)[0]
        more = ' ...' if '\n' in script.strip() else ''
        return clean(first[:60]) + more
    return '(unnamed)'


def short_id(reqid: Any) -> str:
    return str(reqid)[:8]


def format_queue(requests: Iterable[Mapping[str, Any]], paint: Painter) -> list[str]:
    lines = []
    for index, request in enumerate(requests, 1):
        lines.append(f'  #{index}  {short_id(request.get("reqid"))}  '
                     f'{clean(str(request.get("user", "?")))}: {request_label(request)}')
    if not lines:
        return [paint('queue is empty', 'dim')]
    return [paint('queued scripts (use /unqueue #N or ID):', 'bold'), *lines]


def format_where(script: str, lineno: int, name: str, paint: Painter) -> list[str]:
    """The script with a marker on the current line."""
    if not script:
        return [paint('no script has run yet', 'dim')]
    lines = script.rstrip('\n').split('\n')
    header = f'script {clean(name)!s}' if name else 'script'
    if 1 <= lineno <= len(lines):
        header += f', line {lineno}'
    out = [paint(header + ':', 'bold')]
    width = len(str(len(lines)))
    for number, line in enumerate(lines, 1):
        marker = '->' if number == lineno else '  '
        text = f'{marker} {number:>{width}}  {clean(line)}'
        out.append(paint(text, 'bold') if number == lineno else text)
    return out


def format_json(event: str, data: Any = None) -> str:
    """One JSON line for ``--json``."""
    return json.dumps({'event': event, 'data': data}, ensure_ascii=False, default=repr)
