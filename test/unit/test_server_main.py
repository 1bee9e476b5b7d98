"""The entry point: wiring in serve(), option handling in main(), signals in a process."""

import io
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from test_server import FakeController

import nicos
from nicos.clients.base import NicosClient
from nicos_daemon import main as main_module
from nicos_daemon.config import DaemonConfig
from nicos_daemon.events import EventBus

WAIT = 10.0
# serve() makes a 2048-bit RSA key in pure Python (rsa.newkeys): 1-10 s, longer on
# a loaded machine
KEY_WAIT = 60.0
REPO = Path(__file__).resolve().parents[2]


def test_serve_wires_controller_and_server_and_shuts_down(tmp_path):
    config = DaemonConfig(host="127.0.0.1", port=0, authmethod="none", logdir=tmp_path)
    made: list[FakeController] = []

    def factory(bus: EventBus, cfg: DaemonConfig) -> FakeController:
        controller = FakeController(bus, cfg)
        made.append(controller)
        return controller

    ready: queue.Queue = queue.Queue()
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(main_module.serve(
        config, stop.wait, ready=ready.put, controller_factory=factory)))
    thread.start()
    try:
        server = ready.get(timeout=KEY_WAIT)
        assert made[0].started
        client = NicosClient()
        client.connect("127.0.0.1", server.port, "anyone", "any password", timeout=WAIT)
        assert client.user_level == 20
        assert client.ask("getversion") == nicos.__version__
    finally:
        stop.set()
        thread.join(WAIT)
    assert result == [0]
    assert made[0].shut_down
    assert server.logged_in == 0
    client.disconnect()


def test_serve_reports_an_unusable_address(tmp_path):
    import socket
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = DaemonConfig(host="127.0.0.1", port=port, authmethod="none",
                              reuseaddress=False)
        made: list[FakeController] = []

        def factory(bus, cfg):
            made.append(FakeController(bus, cfg))
            return made[-1]

        assert main_module.serve(config, lambda: None, controller_factory=factory) == 1
        assert made[0].shut_down


def test_hash_password_option(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse battery\n"
                                                  "correct horse battery\n"))
    assert main_module.main(["--hash-password"]) == 0
    assert 'hash = "scrypt$' in capsys.readouterr().out


def test_bad_configuration_exits_with_2(tmp_path, monkeypatch):
    monkeypatch.setattr(main_module, "setup_logging", lambda verbose: None)
    bad = tmp_path / "bad.toml"
    bad.write_text('maxlogins = "many"\n')
    assert main_module.main(["--config", str(bad)]) == 2
    assert main_module.main(["--bind", "not a host:1"]) == 2


# The daemon process with a stand-in controller, so this does not need the real one.
_LAUNCHER = textwrap.dedent("""
    import sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    from nicos_daemon import main
    from test_server import FakeController
    main._default_controller = lambda bus, config: FakeController(bus, config)
    sys.exit(main.main(sys.argv[1:]))
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_daemon_process_announces_itself_and_stops_on_signal(tmp_path, signum):
    config = tmp_path / "daemon.toml"
    config.write_text('authmethod = "none"\nlogdir = "logs"\n')
    launcher = _LAUNCHER.format(repo=str(REPO), tests=str(Path(__file__).parent))
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher, "--config", str(config), "--bind", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    try:
        line = proc.stdout.readline()
        assert line.startswith("nicos-daemon listening on 127.0.0.1:"), proc.stderr.read()
        assert line.rstrip().endswith("(authmethod none)")
        port = int(line.split(":")[1].split()[0])
        client = NicosClient()
        client.connect("127.0.0.1", port, "me", "pw", timeout=WAIT)
        assert client.ask("getversion") == nicos.__version__
        proc.send_signal(signum)
        assert proc.wait(WAIT) == 0
        client.disconnect()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert "daemon stopped" in stderr
    assert (tmp_path / "logs" / "daemon.log").read_text().count("login: user me") == 1
