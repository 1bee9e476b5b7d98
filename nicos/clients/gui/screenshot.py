"""Render the main window during a running scan to a PNG (offscreen).

Used for the README (``docs/screenshots/``).  By default it starts a private
demo daemon (loopback, free port, no login check, temporary directories),
runs a scan there and saves the window once the scan has some points::

    bin/gui-screenshot                      # -> docs/screenshots/main-window.png
    bin/gui-screenshot -o /tmp/shot.png --points 12
    NICOS_PASSWORD=... bin/gui-screenshot --address user@host:1301

With ``--address`` it uses a running daemon instead (the password comes from
``NICOS_PASSWORD``) and runs the scan there, so only use it on a demo instrument.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')

from PyQt5.QtCore import QEventLoop, QSettings, QTimer  # noqa: E402
from PyQt5.QtWidgets import QApplication  # noqa: E402

from .client import ConnectionParams  # noqa: E402
from .connect import parse_address  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_OUTPUT = REPO_ROOT / 'docs' / 'screenshots' / 'main-window.png'
DEMO_SCRIPT = """\
# Align the sample on the Bragg peak of the demo instrument
printinfo('alignment scan')
maw(mono, 2.5)
scan(sth, 9.0, 0.1, 21, t=0.2)
printinfo('alignment done')
"""


class DemoDaemon:
    """A private daemon process for the screenshot (no login check: loopback only)."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            self.port = sock.getsockname()[1]
        self.config = workdir / 'daemon.toml'
        self.config.write_text(
            f'server = "127.0.0.1:{self.port}"\nauthmethod = "none"\nsetup = "demo"\n'
            f'datadir = "{workdir / "data"}"\nlogdir = "{workdir / "log"}"\n'
            f'rsakey = "{workdir / "daemon_rsa.pem"}"\nupdateinterval = 0.1\n')
        self.proc: subprocess.Popen[str] | None = None
        self.ready = threading.Event()
        self.output: list[str] = []

    def start(self, timeout: float = 90.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'nicos_daemon.main', '--config', str(self.config)],
            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError('the demo daemon did not start:\n' + ''.join(self.output[-30:]))

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if 'listening on' in line:
                self.ready.set()
        self.ready.set()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wait_until(app: QApplication, condition: Callable[[], bool], timeout: float) -> bool:
    """Run the event loop until *condition* holds (checked after every event batch)."""
    deadline = time.monotonic() + timeout
    loop = QEventLoop()
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: (condition() or time.monotonic() > deadline) and loop.quit())
    timer.start()
    if not condition():
        loop.exec_()
    timer.stop()
    return condition()


def take(output: Path, params: ConnectionParams, password: str, points: int,
         settings_path: Path) -> None:
    from .mainwindow import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    settings = QSettings(str(settings_path), QSettings.IniFormat)
    window = MainWindow(settings)
    window.resize(1400, 900)
    window.show()
    client = window.client
    client.connect_to(params, password)
    if not wait_until(app, lambda: client.is_connected, 30):
        raise RuntimeError(f'cannot connect: {client.last_error or client.conn_state.value}')
    window.watch.add('T.read()')
    window.watch.add('sth.read()')
    window.editor.set_text(DEMO_SCRIPT)
    window.editor.run()
    scan = window.plots.scan
    if not wait_until(app, lambda: len(scan.points()[0]) >= points, 120):
        raise RuntimeError('the scan did not deliver points')
    wait_until(app, lambda: window.editor.edit.current_line is not None, 5)
    output.parent.mkdir(parents=True, exist_ok=True)
    if not window.grab().save(str(output)):
        raise RuntimeError(f'cannot write {output}')
    client.stop_script(3)
    wait_until(app, lambda: client.state.idle, 20)
    for key in list(client.state.watch):
        client.remove_watch(key)
    window.editor.edit.document().setModified(False)
    window.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='gui-screenshot', description=__doc__.split('\n')[0])
    parser.add_argument('-o', '--output', type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument('--points', type=int, default=10,
                        help='scan points to wait for before the picture (default 10)')
    parser.add_argument('--address', default='',
                        help='USER@HOST:PORT of a running demo daemon (password in '
                             'NICOS_PASSWORD); default: start a private one')
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix='gui-screenshot-') as tmp:
        workdir = Path(tmp)
        daemon = None
        if args.address:
            params = parse_address(args.address)
            password = os.environ.pop('NICOS_PASSWORD', '')
        else:
            daemon = DemoDaemon(workdir)
            daemon.start()
            params = ConnectionParams('127.0.0.1', daemon.port, 'admin')
            password = 'demo'  # authmethod none: any password
        try:
            take(args.output, params, password, args.points, workdir / 'gui.ini')
        except RuntimeError as err:
            print(f'gui-screenshot: {err}', file=sys.stderr)
            return 1
        finally:
            if daemon is not None:
                daemon.stop()
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
