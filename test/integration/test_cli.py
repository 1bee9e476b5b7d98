"""``nicos-client`` driven in a pseudo-terminal (pexpect) against a real daemon.

The daemon comes from conftest's ``daemon`` fixture (one per module; accounts are
hashed once per session); the restart test starts its own with ``new_daemon``.
Every step synchronises on output with ``expect``; nothing sleeps.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pexpect
import pytest
from daemonproc import REPO_ROOT, DaemonProcess, Gate, make_idle

CLIENT = REPO_ROOT / "bin" / "nicos-client"
WAIT = 15  # seconds for any expected output; a guard, never reached when tests pass
F12 = "\x1b[24~"
CTRL_C = "\x03"
# The prompt "[idle] >>>"; colour codes may sit between the parts.
SGR = r"(?:\x1b\[[0-9;]*m)*"
IDLE_PROMPT = re.compile(rf"idle{SGR}\]{SGR}(?: view-only)?{SGR} >>>")
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]")


def client_env(home: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("NICOS_PASSWORD", "NO_COLOR", "PYTHONPATH", "VISUAL", "EDITOR")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"),
               XDG_STATE_HOME=str(home / "state"), TERM="xterm-256color",
               # pexpect's terminal does not answer cursor position requests
               PROMPT_TOOLKIT_NO_CPR="1")
    env.update(extra)
    return env


class Cli:
    """One interactive nicos-client in a pseudo-terminal."""

    def __init__(self, daemon: DaemonProcess, home: Path, user: str = "admin",
                 args: Sequence[str] = (), **env: str) -> None:
        self.daemon = daemon
        self.account = daemon.accounts[user]
        self.child = pexpect.spawn(
            sys.executable, [str(CLIENT), f"{user}@{daemon.host}:{daemon.port}", *args],
            env=client_env(home, **env), encoding="utf-8", codec_errors="replace",
            dimensions=(40, 160), timeout=WAIT)
        self.log = io.StringIO()
        self.child.logfile_read = self.log

    def login(self, password: str | None = None) -> None:
        self.expect("Password for")
        self.child.sendline(self.account.password if password is None else password)
        self.expect("--- connected to")
        self.expect_prompt()

    def expect(self, text: str) -> str:
        """Wait for literal *text*; returns the output before it."""
        try:
            self.child.expect_exact(text)
        except (pexpect.TIMEOUT, pexpect.EOF) as err:
            raise AssertionError(f"no {text!r} from the client ({type(err).__name__}); "
                                 f"screen output so far:\n{self.transcript()}") from None
        return self.child.before

    def expect_prompt(self) -> None:
        try:
            self.child.expect(IDLE_PROMPT)
        except (pexpect.TIMEOUT, pexpect.EOF) as err:
            raise AssertionError(f"no idle prompt ({type(err).__name__}); screen output so "
                                 f"far:\n{self.transcript()}") from None

    def transcript(self, tail: int = 4000) -> str:
        """What the client wrote, without terminal control sequences."""
        text = self.log.getvalue()[-tail:]
        return CONTROL.sub("", text.replace("\r", ""))

    def type(self, line: str) -> None:
        self.child.send(line + "\r")

    def quit(self) -> None:
        self.type("/quit")
        self.child.expect(pexpect.EOF)
        self.child.close()
        assert self.child.exitstatus == 0, self.child.exitstatus

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


@pytest.fixture()
def make_cli(daemon: DaemonProcess, tmp_path: Path) -> Iterator[Callable[..., Cli]]:
    """``make_cli(user="admin", args=(), **env)`` -> a started client (not logged in).
    Afterwards the clients are ended and the daemon is made idle again."""
    started: list[Cli] = []

    def make(user: str = "admin", args: Sequence[str] = (), **env: str) -> Cli:
        client = Cli(daemon, tmp_path, user, args, **env)
        started.append(client)
        return client

    yield make
    for client in started:
        client.close()
    cleanup = daemon.connect("admin")
    try:
        make_idle(cleanup)
    finally:
        cleanup.disconnect()


@pytest.fixture()
def cli(make_cli: Callable[..., Cli]) -> Cli:
    """A logged-in admin client."""
    client = make_cli()
    client.login()
    return client


def gate_line(gate: Gate, marker: str) -> str:
    """One line of Python: prints *marker*, then waits for the gate file."""
    return (f"print({marker[:3]!r} + {marker[3:]!r}); "
            f"exec(\"while not __import__('os').path.exists({str(gate.path)!r}): sleep(0.01)\")")


def run_client(daemon: DaemonProcess, home: Path, *args: str, password: str | None = None,
               user: str = "admin", stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = client_env(home, NICOS_PASSWORD=password or daemon.accounts[user].password)
    return subprocess.run([sys.executable, str(CLIENT), f"{user}@{daemon.host}:{daemon.port}",
                           *args], env=env, input=stdin, capture_output=True, text=True,
                          timeout=WAIT * 2)


# -- interactive -----------------------------------------------------------------------------


def test_login_run_output_and_history(make_cli: Callable[..., Cli], tmp_path: Path) -> None:
    cli = make_cli()
    cli.login()
    # getpass switched echo off: the password never reached the terminal
    assert cli.account.password not in cli.log.getvalue()
    cli.type("print('cli-out-' + str(6 * 7))")
    cli.expect("--- started")
    cli.expect("cli-out-42")
    cli.expect("--- finished")
    cli.type("__import__('logging').getLogger('nicos').warning('cli-' + 'warn')")
    cli.expect("WARNING: cli-warn")
    cli.type("1 / 0")
    cli.expect("ERROR: ZeroDivisionError")
    cli.expect("--- failed")
    # a block: Enter after the colon continues the input, a blank line ends it
    cli.type("for i in range(2):")
    cli.type("print('cli-loop-%d' % i)")
    cli.type("")
    cli.expect("cli-loop-0")
    cli.expect("cli-loop-1")
    cli.type("/eval 'cli-' + 'eval'")
    cli.expect("'cli-eval'")
    script = tmp_path / "job.py"
    script.write_text("a = 'cli-' + 'run'\nprint(a + '-file')\n")
    cli.type(f"/run {script}")
    cli.expect("cli-run-file")
    cli.expect("--- finished: " + str(script))
    cli.type("/log 3")
    cli.expect("cli-run-file")
    cli.quit()
    history = (tmp_path / "state" / "nicos-client" / "history").read_text()
    assert "print('cli-out-' + str(6 * 7))" in history
    assert oct((tmp_path / "state" / "nicos-client" / "history").stat().st_mode & 0o777) == "0o600"


def test_break_and_continue_from_the_keyboard(cli: Cli, gates: Callable[[], Gate]) -> None:
    gate = gates()
    cli.type(gate_line(gate, "cli-waiting"))
    cli.expect("cli-waiting")
    cli.child.send(CTRL_C)
    cli.expect("Script is running: (b)reak")
    cli.child.send("b")
    cli.expect("--- paused")
    cli.child.send(CTRL_C)
    cli.expect("Script is paused: (c)ontinue")
    cli.child.send("c")
    cli.expect("--- continuing")
    cli.type("/break 2")
    cli.expect("--- paused")
    cli.type("/where")
    cli.expect("1  print('cli' + '-waiting')")
    cli.type("/continue")
    cli.expect("--- continuing")
    gate.open()
    cli.expect("--- finished")
    cli.expect_prompt()
    # Ctrl-C at an idle prompt only clears the line; the client stays
    cli.child.send("abc" + CTRL_C)
    cli.type("print('cli-' + 'still-here')")
    cli.expect("cli-still-here")
    cli.quit()


def test_queue_unqueue_and_stop(cli: Cli, gates: Callable[[], Gate]) -> None:
    gate = gates()
    cli.type(gate_line(gate, "cli-first"))
    cli.expect("cli-first")
    cli.type("print('cli-' + 'before')")
    cli.expect("--- queued as #1")
    cli.type("print('cli-' + 'third')")
    cli.expect("--- queued as #2")
    cli.type("/queue")
    cli.expect("#2")
    cli.type("/unqueue #2")
    cli.expect("--- removed from the queue")
    cli.type("/stop")
    cli.expect("--- stopped")
    cli.type("/queue")
    cli.expect("queue is empty")
    cli.quit()


def test_edit_queued_script_runs_the_new_text(make_cli: Callable[..., Cli],
                                              gates: Callable[[], Gate]) -> None:
    cli = make_cli(EDITOR="sed -i s/cli-bef/cli-aft/")  # the "editor" changes the text
    cli.login()
    gate = gates()
    cli.type(gate_line(gate, "cli-first"))
    cli.expect("cli-first")
    cli.type("print('cli-bef' + 'ore')")
    cli.expect("--- queued as #1")
    cli.type("/edit #1")
    cli.expect("--- queued script #1 updated by admin")
    gate.open()
    cli.expect("cli-aftore")
    cli.expect("--- finished")
    cli.quit()


def test_emergency_key(cli: Cli, gates: Callable[[], Gate]) -> None:
    gate = gates()
    cli.type(gate_line(gate, "cli-busy"))
    cli.expect("cli-busy")
    cli.child.send(F12)
    cli.expect("EMERGENCY STOP: sending")
    cli.expect("--- stopped")
    cli.expect_prompt()
    cli.type("/emergency")  # also when idle: stops the devices
    cli.expect("EMERGENCY STOP: sending")
    cli.quit()


def expect_all(cli: Cli, *texts: str) -> None:
    """Wait until each of *texts* has appeared, in any order (they come from
    different threads)."""
    missing = list(texts)
    while missing:
        try:
            index = cli.child.expect_exact(missing)
        except (pexpect.TIMEOUT, pexpect.EOF) as err:
            raise AssertionError(f"no {missing!r} from the client ({type(err).__name__}); "
                                 f"screen output so far:\n{cli.transcript()}") from None
        del missing[index]


def test_emergency_key_while_an_eval_waits(cli: Cli, gates: Callable[[], Gate]) -> None:
    script_gate, eval_gate = gates(), gates()
    cli.type(gate_line(script_gate, "cli-busy"))
    cli.expect("cli-busy")
    # an eval that waits for its gate (at most ~20 s): its reply is outstanding
    wait = (f"next((i for i in range(2000) if __import__('os').path.exists("
            f"{str(eval_gate.path)!r}) or __import__('time').sleep(0.01)), None)")
    cli.type(f"/eval ({wait}, 'cli-eval-' + 'done')[1]")
    try:
        cli.expect("waiting for the daemon")
        cli.child.send(F12)
        expect_all(cli, "EMERGENCY STOP: sent on a second connection", "--- stopped")
        assert "'cli-eval-done'" not in cli.transcript()  # the eval still waits
    finally:
        eval_gate.open()
    cli.expect("'cli-eval-done'")
    cli.expect_prompt()
    cli.type("/emergency")  # the connection is free again: sent there
    cli.expect("EMERGENCY STOP: sending")
    cli.expect_prompt()  # /emergency runs before the next prompt: all it said is here
    assert "second connection" not in cli.child.before
    cli.quit()


def test_completion(cli: Cli) -> None:
    cli.type("zqx_marker_value = 'cli-' + 'completed'")
    cli.expect("--- finished")
    cli.expect_prompt()
    cli.child.send("zqx_mark\t")
    cli.expect("er_value")  # completed from the daemon's namespace
    cli.type("")
    cli.expect("'cli-completed'")
    # slash commands: "/help whe<Tab>" becomes "/help where"
    cli.child.send("/help whe\t")
    cli.type("")
    cli.expect("Show the current script with a marker")
    cli.quit()


def test_viewonly_refuses_to_run(make_cli: Callable[..., Cli]) -> None:
    cli = make_cli(args=["--viewonly"])
    cli.login()
    cli.type("print('x')")
    cli.expect("ERROR: view-only connection")
    cli.quit()


def test_wrong_password(make_cli: Callable[..., Cli], daemon: DaemonProcess,
                        tmp_path: Path) -> None:
    cli = make_cli()
    cli.expect("Password for")
    cli.child.sendline("not-the-password")
    cli.expect("login to")
    cli.expect("Invalid username or password")
    cli.child.expect(pexpect.EOF)
    cli.child.close()
    assert cli.child.exitstatus == 4
    result = run_client(daemon, tmp_path, "-c", "1", password="wrong")
    assert result.returncode == 4
    assert "Invalid username or password" in result.stderr


def test_reconnects_when_the_daemon_restarts(new_daemon, tmp_path: Path) -> None:
    daemon = new_daemon("cli-restart")
    cli = Cli(daemon, tmp_path)
    try:
        cli.login()
        daemon.stop_and_check()
        cli.expect("connection lost")
        daemon.start()
        cli.expect(f"--- reconnected to {daemon.host}:{daemon.port}")
        cli.type("print('cli-' + 'after-restart')")
        cli.expect("cli-after-restart")
        cli.quit()
    finally:
        cli.close()
        daemon.stop()


# -- non-interactive ----------------------------------------------------------------------------


def test_command_exit_status(daemon: DaemonProcess, tmp_path: Path) -> None:
    ok = run_client(daemon, tmp_path, "-c", "print('cli-' + 'batch')")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["cli-batch"]
    failed = run_client(daemon, tmp_path, "-c", "1/0")
    assert failed.returncode == 1
    assert "ZeroDivisionError" in failed.stderr
    assert "ERROR: ZeroDivisionError" in failed.stdout


def test_run_file_wait_and_json(daemon: DaemonProcess, tmp_path: Path) -> None:
    script = tmp_path / "scan.py"
    script.write_text("for i in range(3):\n    print('cli-file-%d' % i)\n")
    result = run_client(daemon, tmp_path, "run", str(script), "--wait")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["cli-file-0", "cli-file-1", "cli-file-2"]
    queued = run_client(daemon, tmp_path, "run", str(script))
    assert queued.returncode == 0 and queued.stdout.startswith("queued as ")
    events = run_client(daemon, tmp_path, "--json", "-c", "print('cli-' + 'json')")
    assert events.returncode == 0, events.stderr
    lines = [json.loads(line) for line in events.stdout.splitlines()]
    assert {"event": "result"}.items() <= lines[-1].items()
    assert lines[-1]["data"]["success"] is True
    texts = [line["data"][3] for line in lines if line["event"] == "message"]
    assert "cli-json\n" in texts


def test_stopped_script_exits_nonzero(daemon: DaemonProcess, tmp_path: Path,
                                      gates: Callable[[], Gate]) -> None:
    gate = gates()
    env = client_env(tmp_path, NICOS_PASSWORD=daemon.accounts["admin"].password)
    proc = subprocess.Popen(
        [sys.executable, str(CLIENT), f"admin@{daemon.host}:{daemon.port}",
         "-c", gate_line(gate, "cli-stop-me")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    admin = daemon.connect("admin")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "cli-stop-me\n"
        admin.ask("stop", 2)
        _out, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 3
        assert "stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
        make_idle(admin)
        admin.disconnect()


def test_profiles(daemon: DaemonProcess, tmp_path: Path) -> None:
    config = tmp_path / "config" / "nicos-client"
    config.mkdir(parents=True)
    (config / "profiles.toml").write_text(
        f'default = "lab"\n[profiles.lab]\nhost = "{daemon.host}"\nport = {daemon.port}\n'
        f'user = "user"\n')
    env = client_env(tmp_path, NICOS_PASSWORD=daemon.accounts["user"].password)
    result = subprocess.run([sys.executable, str(CLIENT), "-c", "print('cli-' + 'profile')"],
                            env=env, capture_output=True, text=True, timeout=WAIT * 2)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "cli-profile\n"
    (config / "profiles.toml").write_text(
        f'[profiles.lab]\nhost = "{daemon.host}"\npassword = "secret"\n')
    refused = subprocess.run([sys.executable, str(CLIENT), "lab", "-c", "1"],
                             env=env, capture_output=True, text=True, timeout=WAIT * 2)
    assert refused.returncode == 2
    assert "passwords are never stored in profiles" in refused.stderr
