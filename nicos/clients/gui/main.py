"""Entry point of `nicos-gui`."""

from __future__ import annotations

import argparse
import signal
import sys

from PyQt5.QtCore import QSettings, QTimer
from PyQt5.QtWidgets import QApplication

from .connect import parse_address

ORGANIZATION = 'nicos-ng'
APPLICATION = 'nicos-gui'


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='nicos-gui', description='Graphical client of the NICOS daemon.')
    parser.add_argument('address', nargs='?', default='',
                        help='[USER@]HOST[:PORT] or the name of a saved profile; '
                             'opens the connect dialog filled in with it')
    parser.add_argument('--viewonly', action='store_true',
                        help='watch only: do not start, queue or steer scripts')
    parser.add_argument('--reset-layout', action='store_true',
                        help='forget the saved window layout')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    settings = QSettings(ORGANIZATION, APPLICATION)
    if args.reset_layout:
        settings.remove('window')

    from .connect import load_profiles
    from .mainwindow import MainWindow

    window = MainWindow(settings)
    window.show()
    initial = None
    if args.address:
        profiles = load_profiles(settings)
        if args.address in profiles:
            initial = profiles[args.address]
        else:
            try:
                initial = parse_address(args.address)
            except ValueError as err:
                print(f'nicos-gui: {err}', file=sys.stderr)
                return 2
    dialog = window.show_connect_dialog(initial)
    if args.viewonly:
        dialog.viewonly.setChecked(True)
    # Let Ctrl-C in the terminal close the window: Python signal handlers only
    # run when the interpreter gets control, hence the idle timer.
    signal.signal(signal.SIGINT, lambda *_a: window.close())
    timer = QTimer()
    timer.timeout.connect(lambda: None)
    timer.start(250)
    return app.exec_()


if __name__ == '__main__':
    sys.exit(main())
