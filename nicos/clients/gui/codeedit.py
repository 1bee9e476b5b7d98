"""A plain-text code widget with line numbers and line marks.

Marks: the line being executed (green while running, yellow in a break) and
the line of an error (red, with the message as tooltip).
"""

from __future__ import annotations

from PyQt5.QtCore import QEvent, QRect, QSize, Qt
from PyQt5.QtGui import (
    QColor,
    QFontDatabase,
    QPainter,
    QPaintEvent,
    QResizeEvent,
    QTextCursor,
    QTextFormat,
)
from PyQt5.QtWidgets import QPlainTextEdit, QTextEdit, QToolTip, QWidget

from .highlighter import PythonHighlighter

RUNNING_COLOUR = '#c8f0c8'
PAUSED_COLOUR = '#fff060'
ERROR_COLOUR = '#ffb0b0'


class _Gutter(QWidget):
    def __init__(self, editor: CodeEdit) -> None:
        super().__init__(editor)
        self._editor = editor

    def sizeHint(self) -> QSize:
        return QSize(self._editor.gutter_width(), 0)

    def paintEvent(self, event: QPaintEvent) -> None:
        self._editor.paint_gutter(event)


class CodeEdit(QPlainTextEdit):
    """Python text with line numbers, highlighting and execution/error marks."""

    def __init__(self, parent: QWidget | None = None, readonly: bool = False) -> None:
        super().__init__(parent)
        font = QFontDatabase.systemFont(QFontDatabase.FixedFont)
        self.setFont(font)
        self.setLineWrapMode(QPlainTextEdit.NoWrap)
        self.setTabStopDistance(4 * self.fontMetrics().horizontalAdvance(' '))
        self.setReadOnly(readonly)
        self.highlighter = PythonHighlighter(self.document())
        self._gutter = _Gutter(self)
        self.current_line: int | None = None
        self.paused = False
        self.error_line: int | None = None
        self.error_text = ''
        self.blockCountChanged.connect(self._update_margin)
        self.updateRequest.connect(self._update_gutter)
        self._update_margin()

    # ------------------------------------------------------------------ marks

    def set_current_line(self, line: int | None, paused: bool = False) -> None:
        """Mark *line* (1-based) as executing; None removes the mark."""
        if line is not None and not 1 <= line <= self.blockCount():
            line = None
        if (line, paused) == (self.current_line, self.paused):
            return
        self.current_line, self.paused = line, paused
        self._update_selections()
        if line is not None:
            self._show_line(line)

    def set_error(self, line: int | None, text: str = '') -> None:
        """Mark *line* as the place of an error with message *text*."""
        if line is not None and not 1 <= line <= self.blockCount():
            line = None
        self.error_line, self.error_text = line, text
        self._update_selections()
        if line is not None:
            self._show_line(line)

    def clear_marks(self) -> None:
        self.current_line = self.error_line = None
        self.error_text = ''
        self._update_selections()

    def _show_line(self, line: int) -> None:
        block = self.document().findBlockByNumber(line - 1)
        if not block.isValid():
            return
        # Scroll without moving the user's cursor.
        top = self.blockBoundingGeometry(block).translated(self.contentOffset()).top()
        if top < 0 or top > self.viewport().height() - self.fontMetrics().height():
            cursor = self.textCursor()
            self.setTextCursor(QTextCursor(block))
            self.centerCursor()
            self.setTextCursor(cursor)

    def _selection(self, line: int, colour: str) -> QTextEdit.ExtraSelection:
        selection = QTextEdit.ExtraSelection()
        selection.format.setBackground(QColor(colour))
        selection.format.setProperty(QTextFormat.FullWidthSelection, True)
        selection.cursor = QTextCursor(self.document().findBlockByNumber(line - 1))
        selection.cursor.clearSelection()
        return selection

    def _update_selections(self) -> None:
        selections = []
        if self.error_line is not None:
            selections.append(self._selection(self.error_line, ERROR_COLOUR))
        if self.current_line is not None:
            selections.append(self._selection(
                self.current_line, PAUSED_COLOUR if self.paused else RUNNING_COLOUR))
        self.setExtraSelections(selections)
        self._gutter.update()

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.ToolTip and self.error_line is not None:
            pos = self.viewport().mapFromGlobal(event.globalPos())
            block = self.cursorForPosition(pos).block()
            if block.blockNumber() + 1 == self.error_line:
                QToolTip.showText(event.globalPos(), self.error_text, self)
                return True
        return super().event(event)

    # ----------------------------------------------------------------- gutter

    def gutter_width(self) -> int:
        digits = len(str(max(1, self.blockCount())))
        return 8 + self.fontMetrics().horizontalAdvance('9') * max(digits, 3)

    def _update_margin(self, _count: int = 0) -> None:
        self.setViewportMargins(self.gutter_width(), 0, 0, 0)

    def _update_gutter(self, rect: QRect, dy: int) -> None:
        if dy:
            self._gutter.scroll(0, dy)
        else:
            self._gutter.update(0, rect.y(), self._gutter.width(), rect.height())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        rect = self.contentsRect()
        self._gutter.setGeometry(QRect(rect.left(), rect.top(), self.gutter_width(),
                                       rect.height()))

    def paint_gutter(self, event: QPaintEvent) -> None:
        painter = QPainter(self._gutter)
        painter.fillRect(event.rect(), QColor('#f0f0f0'))
        block = self.firstVisibleBlock()
        number = block.blockNumber()
        top = round(self.blockBoundingGeometry(block).translated(self.contentOffset()).top())
        bottom = top + round(self.blockBoundingRect(block).height())
        height = self.fontMetrics().height()
        width = self._gutter.width() - 4
        while block.isValid() and top <= event.rect().bottom():
            if block.isVisible() and bottom >= event.rect().top():
                line = number + 1
                if line == self.error_line:
                    painter.fillRect(0, top, self._gutter.width(), height, QColor(ERROR_COLOUR))
                if line == self.current_line:
                    painter.fillRect(0, top, self._gutter.width(), height, QColor(
                        PAUSED_COLOUR if self.paused else RUNNING_COLOUR))
                painter.setPen(QColor('#808080'))
                painter.drawText(0, top, width, height, Qt.AlignRight, str(line))
            block = block.next()
            top = bottom
            bottom = top + round(self.blockBoundingRect(block).height())
            number += 1
        painter.end()


__all__ = ['CodeEdit']
