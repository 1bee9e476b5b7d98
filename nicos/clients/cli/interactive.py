"""The interactive prompt: line editing, key bindings, Ctrl-C menu, editor calls.

Built on prompt_toolkit: output from the event thread is printed above the prompt
(``patch_stdout``) without disturbing what the user is typing, and the prompt is
redrawn whenever the daemon's state changes.
"""

from __future__ import annotations

import asyncio
import codeop
import contextlib
import os
import shlex
import signal
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from prompt_toolkit import PromptSession
from prompt_toolkit.application import Application, get_app
from prompt_toolkit.completion import ThreadedCompleter
from prompt_toolkit.enums import DEFAULT_BUFFER
from prompt_toolkit.filters import Condition, has_focus
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import FormattedTextControl, Layout, Window
from prompt_toolkit.output import ColorDepth
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.styles import Style

from nicos.clients.base import VIA_EXTRA, ClientError
from nicos.protocols.daemon import STATUS_INBREAK

from . import commands, render
from .completion import CliCompleter
from .session import CliClient

EMERGENCY_KEY = 'f12'
INDENT = '    '
RECENT_MESSAGES = 10
# A request the prompt waits for longer than this shows a line saying so, and
# the emergency key works meanwhile; quicker ones show nothing (no flicker).
QUIET_WAIT = 0.3
WAITING_TEXT = 'waiting for the daemon ... (F12 = emergency stop)'

T = TypeVar('T')

STYLE = Style.from_dict({
    'state.idle': 'ansigreen bold',
    'state.running': 'ansiyellow bold',
    'state.break': 'ansired bold',
    'state.stopping': 'ansired bold',
    'state.disconnected': 'ansired bold reverse',
    'viewonly': 'ansicyan',
    'prompt': 'bold',
    'waiting': 'ansiyellow',
})


class TerminalView:
    """Prints above the prompt; output can be held back while an editor runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[str] | None = None
        self.app: Application[Any] | None = None

    def show(self, text: str) -> None:
        with self._lock:
            if self._held is not None:
                self._held.append(text)
                return
            # sys.stdout is prompt_toolkit's proxy inside patch_stdout()
            print(text, flush=True)

    def refresh(self) -> None:
        app = self.app
        if app is not None:
            app.invalidate()  # thread-safe

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._lock:
            self._held = []
        try:
            yield
        finally:
            with self._lock:
                held, self._held = self._held or [], None
                for text in held:
                    print(text, flush=True)


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ctrl-C does nothing while a command runs between two prompts: interrupting
    a request to the daemon halfway would leave its reply unread.  (A Python
    handler, not SIG_IGN, so that an editor started meanwhile gets the default.)"""
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Interrupted:
    """Result of the prompt when Ctrl-C was pressed while a script runs."""

    def __init__(self, text: str) -> None:
        self.text = text


def needs_more_input(text: str) -> bool:
    """True when *text* is an incomplete Python statement (Enter then inserts a
    newline, as at the Python prompt); a blank last line always ends input."""
    if not text.strip() or text.lstrip().startswith('/'):
        return False
    lines = text.split('\n')
    if len(lines) > 1 and not lines[-1].strip():
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return codeop.compile_command(text, '<input>', 'single') is None
    except (SyntaxError, ValueError, OverflowError):
        return False  # the daemon reports the error


def prepare_code(text: str) -> str:
    """What is sent for the typed *text*: a single line as is, a block without
    trailing blank lines and with a final newline."""
    lines = text.rstrip().split('\n')
    if len(lines) == 1:
        return lines[0].strip()
    return '\n'.join(lines) + '\n'


class InteractiveShell:
    """The prompt loop of ``nicos-client``."""

    def __init__(self, client: CliClient, view: TerminalView, paint: render.Painter,
                 address: str, history: Path | None) -> None:
        self.client = client
        self.view = view
        self.paint = paint
        self.address = address
        self._pending = ''
        hist: History = FileHistory(str(history)) if history else InMemoryHistory()
        self.session: PromptSession[Any] = PromptSession(
            message=self._message,
            bottom_toolbar=self._toolbar,
            prompt_continuation=self._continuation,
            completer=ThreadedCompleter(CliCompleter(client, commands.COMMANDS)),
            complete_while_typing=False,
            history=hist,
            key_bindings=self._bindings(),
            multiline=True,
            style=STYLE,
            include_default_pygments_style=False,
            color_depth=None if paint.color else ColorDepth.MONOCHROME,
        )

    # -- output for the commands -------------------------------------------------------

    def show(self, text: str) -> None:
        self.view.show(text)

    def error(self, text: str) -> None:
        self.view.show(self.paint(f'ERROR: {text}', 'error'))

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        with patch_stdout(raw=True):
            self.view.app = self.session.app
            self.client.waiter = self.wait_for_daemon
            try:
                self._welcome()
                self._loop()
            finally:
                self.client.waiter = None
                self.view.app = None
            if not self.client.state.idle and self.client.connected:
                self.show(render.notice('the script goes on running in the daemon', self.paint))
        return 0

    def _loop(self) -> None:
        while True:
            try:
                result = self.session.prompt(default=self._pending)
            except KeyboardInterrupt:
                self._pending = ''
                continue
            except EOFError:
                return
            self._pending = ''
            try:
                with sigint_ignored():
                    if isinstance(result, _Interrupted):
                        self._pending = result.text
                        self._interrupt_menu()
                    else:
                        self.handle(result)
            except commands.Quit:
                return

    def _welcome(self) -> None:
        client = self.client
        version = client.banner.get('daemon_version', '?')
        self.show(render.notice(
            f'connected to {self.address} as {client.login} ({client.level_name}'
            f'{", view-only" if client.viewonly else ""}); daemon {render.clean(str(version))}, '
            f'{render.state_name(client.state.status)}', self.paint))
        try:
            records = client.ask('getmessages', str(RECENT_MESSAGES))
        except ClientError:
            records = []
        for record in records if isinstance(records, list) else []:
            text = render.format_record(record, self.paint)
            if text is not None:
                self.show(f'{self.paint(render.record_time(record), "dim")} {text}')
        self.show(self.paint('Type Python code to run it, /help for commands; '
                             'F12 = emergency stop.', 'dim'))

    def handle(self, text: str) -> None:
        stripped = text.strip()
        if not stripped:
            return
        if stripped.startswith('/') and '\n' not in stripped:
            commands.dispatch(self, stripped)
            return
        self.submit(prepare_code(text))

    def submit(self, code: str, name: str = '') -> None:
        if not self.client.connected:
            self.error('not connected to the daemon; waiting to reconnect')
            return
        try:
            self.client.submit(code, name)
        except ClientError as err:
            self.error(str(err))

    def emergency(self) -> None:
        """Send the emergency stop; never waits behind another request (the
        client library uses a second connection while the first one is busy)."""
        # said first, so that it comes before the daemon's reaction
        self.show(self.paint('EMERGENCY STOP: sending', 'error'))
        try:
            via = self.client.emergency()
        except ClientError as err:
            self.error(f'emergency stop failed: {err}')
            return
        if via == VIA_EXTRA:
            self.show(self.paint(f'EMERGENCY STOP: sent on a {via}', 'error'))

    # -- waiting for the daemon --------------------------------------------------------

    def wait_for_daemon(self, request: Callable[[], T]) -> T:
        """Run *request* (a call that waits for the daemon) in a worker thread.

        Between two prompts no key would be read, so while a slow request
        (a long /eval) is outstanding, a one-line indicator runs instead,
        on which F12 sends the emergency stop.  Printable keys typed
        meanwhile are kept for the next prompt.
        """
        done = threading.Event()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome['value'] = request()
            except BaseException as err:  # noqa: BLE001 - raised again in the caller
                outcome['error'] = err
            finally:
                done.set()

        threading.Thread(target=work, name='nicos-request', daemon=True).start()
        if not done.wait(QUIET_WAIT):
            self._show_waiting(done)
        done.wait()
        if 'error' in outcome:
            raise outcome['error']
        return outcome['value']

    def _show_waiting(self, done: threading.Event) -> None:
        typed: list[str] = []
        bindings = KeyBindings()

        @bindings.add(EMERGENCY_KEY)
        def _(event: KeyPressEvent) -> None:
            threading.Thread(target=self.emergency, name='emergency', daemon=True).start()

        @bindings.add('c-c')
        def _(event: KeyPressEvent) -> None:
            self.show(self.paint('still waiting for the daemon; F12 = emergency stop', 'dim'))

        @bindings.add('<any>')
        def _(event: KeyPressEvent) -> None:
            if event.data.isprintable():
                typed.append(event.data)

        app: Application[None] = Application(
            layout=Layout(Window(FormattedTextControl([('class:waiting', WAITING_TEXT)]),
                                 height=1)),
            key_bindings=bindings, style=STYLE, erase_when_done=True,
            color_depth=None if self.paint.color else ColorDepth.MONOCHROME)

        async def exit_when_done() -> None:
            # in an executor: the event is set by a plain thread
            await asyncio.get_running_loop().run_in_executor(None, done.wait)
            app.exit()

        try:
            # handle_sigint off: Ctrl-C is the key above, and the caller's
            # handler (sigint_ignored) stays in place
            app.run(pre_run=lambda: app.create_background_task(exit_when_done()),
                    handle_sigint=False)
        except (EOFError, KeyboardInterrupt):
            pass  # no terminal any more: the caller just waits
        self._pending += ''.join(typed)

    # -- Ctrl-C and other questions -------------------------------------------------------

    def _interrupt_menu(self) -> None:
        state = self.client.state
        if state.idle:
            return  # ended meanwhile
        if state.status == STATUS_INBREAK:
            question, keys = ('Script is paused: (c)ontinue, (s)top, (e)mergency stop, '
                              'or (n)othing? '), 'csen'
        else:
            question, keys = ('Script is running: (b)reak, (s)top, (e)mergency stop, '
                              'or (n)othing? '), 'bsen'
        choice = self.ask_key(question, keys)
        if choice == 'b':
            commands.cmd_break(self, '')
        elif choice == 'c':
            commands.cmd_continue(self, '')
        elif choice == 's':
            commands.cmd_stop(self, '')
        elif choice == 'e':
            self.emergency()

    def ask_key(self, question: str, keys: str) -> str:
        """Ask a question answered by one key of *keys*; '' for Enter/Esc/Ctrl-C."""
        bindings = KeyBindings()

        def answer(result: str) -> Any:
            def handler(event: KeyPressEvent) -> None:
                event.app.exit(result=result)
            return handler

        for key in keys:
            bindings.add(key)(answer(key))
            bindings.add(key.upper())(answer(key))
        for key in ('c-c', 'c-d', 'enter', 'escape'):
            bindings.add(key)(answer(''))
        bindings.add('<any>')(lambda event: None)
        session: PromptSession[str] = PromptSession(key_bindings=bindings, style=STYLE)
        try:
            return session.prompt([('bold', question)]) or ''
        except (KeyboardInterrupt, EOFError):
            return ''

    # -- the editor ----------------------------------------------------------------------------

    def edit_text(self, text: str, suffix: str) -> str | None:
        """Let the user edit *text* in $VISUAL/$EDITOR; None if that failed."""
        with tempfile.TemporaryDirectory(prefix='nicos-client-') as tmp:
            path = Path(tmp) / f'script{suffix}'
            path.write_text(text, encoding='utf-8')
            if not self.edit_file(path):
                return None
            return path.read_text(encoding='utf-8')

    def edit_file(self, path: Path) -> bool:
        editor = os.environ.get('VISUAL') or os.environ.get('EDITOR') or 'vi'
        argv = [*shlex.split(editor), str(path)]
        with self.view.hold():
            try:
                code = subprocess.call(argv)
            except OSError as err:
                self.error(f'cannot start the editor {editor!r}: {err.strerror or err}; '
                           f'set $EDITOR')
                return False
        if code != 0:
            self.error(f'the editor exited with status {code}; nothing changed')
            return False
        return True

    # -- prompt, toolbar, keys --------------------------------------------------------------------

    def _message(self) -> StyleAndTextTuples:
        state = self.client.state
        if not state.connected:
            label, style = 'disconnected', 'class:state.disconnected'
        else:
            name = render.state_name(state.status)
            line = state.valid_line()
            label = f'{name}, line {line}' if line and not state.idle else name
            style = f'class:state.{name}'
        parts: StyleAndTextTuples = [('', '['), (style, label), ('', ']')]
        if self.client.viewonly:
            parts.append(('class:viewonly', ' view-only'))
        parts.append(('class:prompt', ' >>> '))
        return parts

    @staticmethod
    def _continuation(width: int, line_number: int, is_soft_wrap: bool) -> str:
        return '.' * max(width - 1, 3) + ' '

    def _toolbar(self) -> str:
        client = self.client
        state = client.state
        parts = [f'{client.login}@{self.address}']
        if not state.connected:
            parts.append('connection lost, reconnecting ...')
        elif state.current:
            current = render.request_label(state.current)
            line = state.valid_line()
            if line:
                current += f'  line {line}: {render.clean(state.line_text())[:60]}'
            parts.append(current)
        if state.requests:
            parts.append(f'{len(state.requests)} queued')
        if state.action:
            parts.append(render.clean(state.action)[:40])
        if state.watch:
            watched = ', '.join(f'{commands.watch_name(k)}={v}' for k, v in state.watch.items())
            parts.append(render.clean(watched)[:100])
        return ' | '.join(parts)

    def _bindings(self) -> KeyBindings:
        bindings = KeyBindings()
        script_active = Condition(lambda: self.client.connected and not self.client.state.idle)

        @bindings.add('c-c', filter=script_active)
        def _(event: KeyPressEvent) -> None:
            """Ctrl-C while a script runs: ask what to do instead of quitting."""
            event.app.exit(result=_Interrupted(event.current_buffer.text))

        @bindings.add(EMERGENCY_KEY)
        def _(event: KeyPressEvent) -> None:
            threading.Thread(target=self.emergency, name='emergency', daemon=True).start()

        @bindings.add('enter', filter=has_focus(DEFAULT_BUFFER))
        def _(event: KeyPressEvent) -> None:
            buffer = event.current_buffer
            if buffer.complete_state:
                buffer.complete_state = None  # keep the chosen completion
                return
            text = buffer.text
            lines = text.split('\n')
            if len(lines) > 1 and not lines[-1].strip():
                buffer.validate_and_handle()  # a finished block, e.g. from the history
                return
            at_end = buffer.cursor_position == len(text)
            if (len(lines) > 1 and not at_end) or needs_more_input(text):
                line = buffer.document.current_line_before_cursor
                indent = line[:len(line) - len(line.lstrip())]
                if line.rstrip().endswith(':'):
                    indent += INDENT
                buffer.insert_text('\n' + indent)
                return
            buffer.validate_and_handle()

        blank_before_cursor = Condition(
            lambda: not get_app().current_buffer.document.current_line_before_cursor.strip())

        @bindings.add('tab', filter=blank_before_cursor & has_focus(DEFAULT_BUFFER))
        def _(event: KeyPressEvent) -> None:
            event.current_buffer.insert_text(INDENT)

        return bindings
