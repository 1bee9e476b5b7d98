"""Python syntax highlighting for the script editor and script views."""

from __future__ import annotations

import builtins
import keyword
import re

from PyQt5.QtCore import QRegularExpression
from PyQt5.QtGui import QColor, QFont, QSyntaxHighlighter, QTextCharFormat, QTextDocument

# Commands of the instrument that users type most; shown like builtins.
NICOS_COMMANDS = (
    'move', 'maw', 'wait', 'read', 'status', 'stop', 'reset', 'adjust', 'count', 'scan',
    'cscan', 'sleep', 'printinfo', 'printwarning', 'printerror', 'help', 'NewSetup',
    'AddSetup', 'RemoveSetup', 'ListSetups',
)

# Block states: inside a triple-quoted string started with ''' or """.
_IN_SINGLE_TRIPLE = 1
_IN_DOUBLE_TRIPLE = 2


def _format(colour: str, bold: bool = False, italic: bool = False) -> QTextCharFormat:
    fmt = QTextCharFormat()
    fmt.setForeground(QColor(colour))
    if bold:
        fmt.setFontWeight(QFont.Bold)
    if italic:
        fmt.setFontItalic(True)
    return fmt


class PythonHighlighter(QSyntaxHighlighter):
    """Keywords, builtins and NICOS commands, numbers, strings (also
    triple-quoted over several lines), comments, decorators, def/class names."""

    def __init__(self, document: QTextDocument) -> None:
        super().__init__(document)
        words = '|'.join(re.escape(k) for k in keyword.kwlist)
        names = sorted(set(dir(builtins)) | set(NICOS_COMMANDS))
        builtin_words = '|'.join(re.escape(n) for n in names if not n.startswith('_'))
        self._rules: list[tuple[QRegularExpression, QTextCharFormat, int]] = [
            (QRegularExpression(rf'\b(?:{words})\b'), _format('#0000c0', bold=True), 0),
            (QRegularExpression(rf'\b(?:{builtin_words})\b'), _format('#7030a0'), 0),
            (QRegularExpression(r'\b(?:0[xX][0-9a-fA-F_]+|[0-9][0-9_]*\.?[0-9_]*'
                                r'(?:[eE][+-]?[0-9]+)?j?)\b'), _format('#008080'), 0),
            (QRegularExpression(r'^\s*@[\w.]+'), _format('#a06000'), 0),
            (QRegularExpression(r'\b(?:def|class)\s+(\w+)'), _format('#000080', bold=True), 1),
            (QRegularExpression(r'\bself\b'), _format('#a00050', italic=True), 0),
        ]
        self._string = _format('#008000')
        self._comment = _format('#808080', italic=True)
        # strings and comments are found by one scanner, so that a '#' inside a
        # string and quotes inside a comment are handled right
        self._scanner = re.compile(r"""(?P<triple>'''|\"\"\")|(?P<str>'(?:\\.|[^'\\])*'?"""
                                   r'''|"(?:\\.|[^"\\])*"?)|(?P<comment>#.*)''')

    def highlightBlock(self, text: str) -> None:
        for regex, fmt, group in self._rules:
            matches = regex.globalMatch(text)
            while matches.hasNext():
                match = matches.next()
                self.setFormat(match.capturedStart(group), match.capturedLength(group), fmt)
        self._highlight_strings(text)

    def _highlight_strings(self, text: str) -> None:
        self.setCurrentBlockState(0)
        pos = 0
        previous = self.previousBlockState()
        if previous in (_IN_SINGLE_TRIPLE, _IN_DOUBLE_TRIPLE):
            delim = "'''" if previous == _IN_SINGLE_TRIPLE else '"""'
            end = text.find(delim)
            if end < 0:
                self.setFormat(0, len(text), self._string)
                self.setCurrentBlockState(previous)
                return
            self.setFormat(0, end + 3, self._string)
            pos = end + 3
        while pos < len(text):
            match = self._scanner.search(text, pos)
            if match is None:
                return
            start = match.start()
            if match.group('triple'):
                delim = match.group('triple')
                end = text.find(delim, start + 3)
                if end < 0:
                    self.setFormat(start, len(text) - start, self._string)
                    self.setCurrentBlockState(_IN_SINGLE_TRIPLE if delim == "'''"
                                              else _IN_DOUBLE_TRIPLE)
                    return
                self.setFormat(start, end + 3 - start, self._string)
                pos = end + 3
            elif match.group('str'):
                self.setFormat(start, match.end() - start, self._string)
                pos = match.end()
            else:
                self.setFormat(start, len(text) - start, self._comment)
                return


__all__ = ['NICOS_COMMANDS', 'PythonHighlighter']
