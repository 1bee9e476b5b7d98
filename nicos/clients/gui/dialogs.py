"""Non-modal dialogs: a modal dialog would block the main window, and with it
the emergency stop button, until it is closed."""

from __future__ import annotations

from collections.abc import Callable

from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import QDialog, QFileDialog, QMessageBox, QWidget


def confirm(parent: QWidget, title: str, text: str, on_yes: Callable[[], None]) -> QMessageBox:
    """Ask a yes/no question without blocking; *on_yes* runs if confirmed."""
    box = QMessageBox(QMessageBox.Question, title, text, QMessageBox.Yes | QMessageBox.No,
                      parent)
    box.setWindowModality(Qt.NonModal)
    box.setAttribute(Qt.WA_DeleteOnClose)
    box.setDefaultButton(QMessageBox.No)

    def clicked(button: object) -> None:
        if box.standardButton(button) == QMessageBox.Yes:
            on_yes()

    box.buttonClicked.connect(clicked)
    box.show()
    return box


def inform(parent: QWidget, title: str, text: str, error: bool = False) -> QMessageBox:
    box = QMessageBox(QMessageBox.Critical if error else QMessageBox.Information, title, text,
                      QMessageBox.Ok, parent)
    box.setWindowModality(Qt.NonModal)
    box.setAttribute(Qt.WA_DeleteOnClose)
    box.show()
    return box


def choose_file(parent: QWidget, title: str, directory: str, on_chosen: Callable[[str], None],
                save: bool = False) -> QFileDialog:
    """A non-modal file dialog for Python scripts; *on_chosen* gets the path."""
    dialog = QFileDialog(parent, title, directory,
                         'Python scripts (*.py);;All files (*)')
    # The platform's native dialog may be modal whatever we ask for.
    dialog.setOption(QFileDialog.DontUseNativeDialog, True)
    dialog.setWindowModality(Qt.NonModal)
    dialog.setAttribute(Qt.WA_DeleteOnClose)
    if save:
        dialog.setAcceptMode(QFileDialog.AcceptSave)
        dialog.setDefaultSuffix('py')
    else:
        dialog.setFileMode(QFileDialog.ExistingFile)
    dialog.fileSelected.connect(on_chosen)
    dialog.show()
    return dialog


def show_nonmodal(dialog: QDialog) -> QDialog:
    dialog.setWindowModality(Qt.NonModal)
    dialog.show()
    dialog.raise_()
    dialog.activateWindow()
    return dialog
