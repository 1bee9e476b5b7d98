"""Slash commands of the interactive mode (``/break``, ``/queue``, ...).

Each command is a function registered with :func:`command`; its first docstring
line is the one-line help, the rest is shown by ``/help NAME``.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nicos.clients.base import ClientError
from nicos.protocols.daemon import BREAK_AFTER_STEP

from . import render
from .session import CliClient

DEFAULT_LOG_LINES = 20
UPDATE_REASON = 'edited in nicos-client'


class Shell(Protocol):
    """What the commands need from the interactive shell."""

    client: CliClient
    paint: render.Painter

    def show(self, text: str) -> None: ...
    def error(self, text: str) -> None: ...
    def submit(self, code: str, name: str = '') -> None: ...
    def edit_text(self, text: str, suffix: str) -> str | None: ...
    def edit_file(self, path: Path) -> bool: ...
    def emergency(self) -> None: ...


class Quit(Exception):
    """Raised by /quit."""


class UsageError(Exception):
    """Wrong arguments; the message says what is expected."""


@dataclass(frozen=True)
class SlashCommand:
    name: str
    args: str  # usage of the arguments, '' for none
    complete: str  # how to complete the argument: '', 'file', 'python', 'request', 'command'
    func: Callable[[Shell, str], None]

    @property
    def summary(self) -> str:
        return (self.func.__doc__ or '').strip().split('\n', 1)[0]

    @property
    def details(self) -> str:
        doc = (self.func.__doc__ or '').strip()
        return '\n'.join(line.strip() for line in doc.split('\n'))

    @property
    def usage(self) -> str:
        return f'/{self.name} {self.args}'.rstrip()


COMMANDS: dict[str, SlashCommand] = {}
ALIASES = {'exit': 'quit', 'q': 'quit', 'h': 'help', '?': 'help', 'cont': 'continue'}


def command(name: str, args: str = '', complete: str = '') \
        -> Callable[[Callable[[Shell, str], None]], Callable[[Shell, str], None]]:
    def register(func: Callable[[Shell, str], None]) -> Callable[[Shell, str], None]:
        COMMANDS[name] = SlashCommand(name, args, complete, func)
        return func
    return register


def dispatch(shell: Shell, line: str) -> None:
    """Run one slash command line (starting with ``/``).  Raises Quit."""
    name, _, arg = line[1:].strip().partition(' ')
    name = ALIASES.get(name.lower(), name.lower())
    spec = COMMANDS.get(name)
    if spec is None:
        matches = [n for n in COMMANDS if n.startswith(name)] if name else []
        if len(matches) != 1:
            hint = f' (did you mean {", ".join("/" + m for m in matches)}?)' if matches else ''
            shell.error(f'unknown command /{name}{hint}; /help lists the commands')
            return
        spec = COMMANDS[matches[0]]
    try:
        spec.func(shell, arg.strip())
    except UsageError as err:
        shell.error(f'{err}; usage: {spec.usage}')
    except ClientError as err:
        shell.error(str(err))


# -- helpers ----------------------------------------------------------------------------

def _level(arg: str, default: int = BREAK_AFTER_STEP) -> int:
    if not arg:
        return default
    if not arg.isdigit() or not 1 <= int(arg) <= 5:
        raise UsageError('the level is a number from 1 to 5')
    return int(arg)


def _tell(shell: Shell, name: str, *args: Any) -> bool:
    try:
        shell.client.ask(name, *args)
    except ClientError as err:
        shell.error(f'{name}: {err}')
        return False
    return True


def find_request(shell: Shell, token: str) -> dict[str, Any] | None:
    """The queued or running request named by *token*: ``#N``/``N`` (queue
    position), a request id or a prefix of one, or ``.`` for the running script."""
    state = shell.client.state
    queued = list(state.requests.values())
    current = state.current
    if token in ('', '.', 'running'):
        return current
    position = token[1:] if token.startswith('#') else token
    if position.isdigit() and len(position) < 4:
        index = int(position)
        return queued[index - 1] if 1 <= index <= len(queued) else None
    candidates = queued + ([current] if current else [])
    found = [req for req in candidates
             if isinstance(req.get('reqid'), str) and req['reqid'].startswith(token)]
    return found[0] if len(found) == 1 else None


def _read_file(path: str) -> tuple[str, str]:
    """(absolute path, contents) of a local script file."""
    if not path:
        raise UsageError('give a file name')
    file = Path(path).expanduser()
    try:
        return str(file.resolve()), file.read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as err:
        raise ClientError(f'cannot read {file}: {getattr(err, "strerror", None) or err}') \
            from None


# -- script control -----------------------------------------------------------------------

@command('break', '[LEVEL]')
def cmd_break(shell: Shell, arg: str) -> None:
    """Pause the running script.
    LEVEL 1: after the current command; 2 (default): after the current step
    (scan point, wait or sleep round); 3: also inside a count; 5: at once."""
    _tell(shell, 'break', _level(arg))  # the daemon's messages confirm it


@command('continue')
def cmd_continue(shell: Shell, arg: str) -> None:
    """Resume the paused script."""
    _tell(shell, 'continue')


@command('stop', '[LEVEL]')
def cmd_stop(shell: Shell, arg: str) -> None:
    """Stop the running script and drop the queued ones.
    LEVEL as for /break; default 2 (after the current step)."""
    _tell(shell, 'stop', _level(arg))


@command('finish')
def cmd_finish(shell: Shell, arg: str) -> None:
    """End the current count early, keeping its data; the script goes on."""
    _tell(shell, 'finish')


@command('emergency')
def cmd_emergency(shell: Shell, arg: str) -> None:
    """Emergency stop: drop the queue, stop the script at once, stop all devices.
    Also on the F12 key and in the Ctrl-C menu."""
    shell.emergency()


# -- the queue -----------------------------------------------------------------------------

@command('queue')
def cmd_queue(shell: Shell, arg: str) -> None:
    """List the queued scripts with their positions and ids."""
    state = shell.client.state
    if state.current:
        shell.show(f'running: {render.request_label(state.current)}')
    for line in render.format_queue(list(state.requests.values()), shell.paint):
        shell.show(line)


@command('unqueue', '#N|ID|*', complete='request')
def cmd_unqueue(shell: Shell, arg: str) -> None:
    """Remove a queued script (position from /queue, or request id); * removes all."""
    if not arg:
        raise UsageError('which script?')
    if arg == '*':
        _tell(shell, 'unqueue', '*')
        return
    request = find_request(shell, arg)
    if request is None or request is shell.client.state.current:
        shell.error(f'no queued script {arg!r}; /queue lists them')
        return
    _tell(shell, 'unqueue', request['reqid'])


@command('edit', '[#N|ID|FILE]', complete='file')
def cmd_edit(shell: Shell, arg: str) -> None:
    """Edit a script in $EDITOR, then update it in the daemon.
    Without argument: the running script. #N or an id: that queued script.
    FILE: a local file; if a queued or running script came from it, that
    script is updated too."""
    client = shell.client
    request = find_request(shell, arg)
    if request is None and arg and not arg.startswith('#'):
        _edit_file(shell, arg)
        return
    if request is None:
        shell.error('no script is running' if not arg else
                    f'no queued or running script {arg!r}; /queue lists them')
        return
    old = request.get('script') or ''
    new = shell.edit_text(old, '.py')
    if new is None or new == old:
        shell.show(render.notice('unchanged; nothing sent', shell.paint))
        return
    running = request is client.state.current
    client.ask('update', new, UPDATE_REASON, request.get('reqid'))
    if running:
        shell.show(render.notice('running script updated', shell.paint))


def _edit_file(shell: Shell, arg: str) -> None:
    path = str(Path(arg).expanduser().resolve())
    if not shell.edit_file(Path(path)):
        return
    state = shell.client.state
    candidates = list(state.requests.values()) + ([state.current] if state.current else [])
    matching = [req for req in candidates if req.get('name') == path]
    if not matching:
        shell.show(render.notice(f'saved; /run {shlex.quote(arg)} to run it', shell.paint))
        return
    _, text = _read_file(path)
    for request in matching:
        if request.get('script') != text:
            shell.client.ask('update', text, UPDATE_REASON, request.get('reqid'))
            what = 'running script' if request is state.current else 'queued script'
            shell.show(render.notice(f'{what} updated from {arg}', shell.paint))


@command('run', 'FILE', complete='file')
def cmd_run(shell: Shell, arg: str) -> None:
    """Run a local script file (started at once when idle, else queued)."""
    name, text = _read_file(arg)
    shell.submit(text, name)


@command('sim', 'FILE', complete='file')
def cmd_sim(shell: Shell, arg: str) -> None:
    """Dry-run a local script file in the daemon (output marked "(dry run)")."""
    name, text = _read_file(arg)
    shell.client.ask('simulate', name, text)
    shell.show(render.notice(f'dry run of {arg} started', shell.paint))


# -- watching and inspecting ----------------------------------------------------------------

@command('watch', '[EXPR]', complete='python')
def cmd_watch(shell: Shell, arg: str) -> None:
    """Watch an expression: its value is shown in the bottom bar.
    Without argument: list the watched expressions and their values."""
    client = shell.client
    if not arg:
        values = client.state.watch
        if not values:
            shell.show(shell.paint('nothing is watched', 'dim'))
        for key, value in values.items():
            shell.show(f'  {render.clean(watch_name(key))} = {render.clean(value)}')
        return
    client.ask('watch', [arg])
    shell.show(render.notice(f'watching {arg}', shell.paint))


def watch_name(key: str) -> str:
    """The watch key "expr:group" as shown: without the default group."""
    expr, _, group = key.rpartition(':')
    return expr if group == 'default' else key


@command('unwatch', 'EXPR', complete='python')
def cmd_unwatch(shell: Shell, arg: str) -> None:
    """Stop watching an expression."""
    if not arg:
        raise UsageError('which expression?')
    shell.client.ask('unwatch', [arg])


@command('eval', 'EXPR', complete='python')
def cmd_eval(shell: Shell, arg: str) -> None:
    """Evaluate an expression in the script namespace and print its value.
    Works while a script runs; nothing is queued."""
    if not arg:
        raise UsageError('what to evaluate?')
    shell.show(render.clean(str(shell.client.ask('eval', arg, True))))


@command('trace')
def cmd_trace(shell: Shell, arg: str) -> None:
    """Show where the running script is (its Python stack)."""
    trace = shell.client.ask('gettrace')
    text = trace.strip() if isinstance(trace, str) else ''
    shell.show(render.clean(text) if text else shell.paint('no script is running', 'dim'))


@command('log', '[N]')
def cmd_log(shell: Shell, arg: str) -> None:
    """Show the last N messages of the daemon (default 20)."""
    if arg and not arg.isdigit():
        raise UsageError('N is a number')
    records = shell.client.ask('getmessages', arg or str(DEFAULT_LOG_LINES))
    for record in records if isinstance(records, list) else []:
        text = render.format_record(record, shell.paint)
        if text is not None:
            shell.show(f'{shell.paint(render.record_time(record), "dim")} {text}')


@command('where')
def cmd_where(shell: Shell, arg: str) -> None:
    """Show the current script with a marker on the current line."""
    state = shell.client.state
    for line in render.format_where(state.script, state.valid_line() or -1,
                                    state.scriptname, shell.paint):
        shell.show(line)


# -- the client ---------------------------------------------------------------------------------

@command('help', '[COMMAND]', complete='command')
def cmd_help(shell: Shell, arg: str) -> None:
    """Show the commands, or the details of one."""
    if arg:
        name = ALIASES.get(arg.lstrip('/'), arg.lstrip('/'))
        spec = COMMANDS.get(name)
        if spec is None:
            shell.error(f'unknown command /{name}')
            return
        shell.show(shell.paint(spec.usage, 'bold'))
        shell.show(spec.details)
        return
    shell.show(shell.paint('Type Python code to run it in the daemon (started when idle, '
                           'queued when busy). Commands:', 'bold'))
    width = max(len(spec.usage) for spec in COMMANDS.values())
    for spec in COMMANDS.values():
        shell.show(f'  {spec.usage:<{width}}  {spec.summary}')
    shell.show(shell.paint('Keys: Tab completes, Ctrl-C while a script runs offers break/stop, '
                           'F12 = emergency stop, Ctrl-D or /quit leaves '
                           '(scripts keep running).', 'dim'))


@command('quit')
def cmd_quit(shell: Shell, arg: str) -> None:
    """Leave the client; a running script goes on in the daemon."""
    raise Quit
