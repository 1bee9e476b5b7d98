"""Common base of the dock panels."""

from __future__ import annotations

from PyQt5.QtCore import QSettings
from PyQt5.QtWidgets import QWidget

from ..client import QtClient


class Panel(QWidget):
    """A widget shown in a dock of the main window.

    *name* is the dock's object name (used for the saved layout) and the
    settings group of the panel; *title* is shown on the dock.
    """

    name = 'panel'
    title = 'Panel'

    def __init__(self, client: QtClient, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.setObjectName(f'panel-{self.name}')

    def save_settings(self, settings: QSettings) -> None:
        """Store the panel's own settings (called in the panel's group)."""

    def restore_settings(self, settings: QSettings) -> None:
        """Restore what save_settings() stored (called in the panel's group)."""
