"""Tab completion: slash commands, their arguments, and Python names from the daemon.

Python names come from the daemon's ``complete`` command (the script namespace lives
there); the completer runs in prompt_toolkit's completion thread, so a slow daemon
never blocks typing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from nicos.clients.base import ClientError, NicosClient

from .commands import ALIASES, SlashCommand

_LAST_WORD = re.compile(r'[A-Za-z_][\w.]*$')


class CliCompleter(Completer):
    def __init__(self, client: NicosClient, commands: Mapping[str, SlashCommand]) -> None:
        self.client = client
        self.commands = commands
        self.paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document,
                        complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        if text.startswith('/') and '\n' not in text:
            yield from self._slash(text, complete_event)
            return
        yield from self.python_names(document.current_line_before_cursor)

    def _slash(self, text: str, event: CompleteEvent) -> Iterable[Completion]:
        name, space, arg = text[1:].partition(' ')
        if not space:
            for candidate in self.commands:
                if candidate.startswith(name):
                    yield Completion(candidate + ' ', start_position=-len(name),
                                     display='/' + candidate,
                                     display_meta=self.commands[candidate].summary)
            return
        spec = self.commands.get(ALIASES.get(name, name))
        if spec is None:
            return
        arg = arg.lstrip()
        if spec.complete == 'file':
            yield from self.paths.get_completions(Document(arg, len(arg)), event)
        elif spec.complete == 'python':
            yield from self.python_names(arg)
        elif spec.complete == 'command':
            for candidate in self.commands:
                if candidate.startswith(arg):
                    yield Completion(candidate, start_position=-len(arg))

    def python_names(self, line: str) -> Iterable[Completion]:
        """Completions of the name at the end of *line*, asked from the daemon."""
        match = _LAST_WORD.search(line)
        if match is None or not self.client.connected:
            return
        word = match.group()
        try:
            names = self.client.ask('complete', line, word)
        except ClientError:
            return
        if not isinstance(names, list):
            return
        for name in names:
            if isinstance(name, str) and name.startswith(word) and name != word:
                yield Completion(name, start_position=-len(word))
