"""Start the real upstream NICOS daemon (release 3.12.2) on the loopback interface.

Used to benchmark our daemon against upstream and to check the upstream-client
driver (test/integration/upstream/driver.py) against the genuine article.

The daemon runs from the unpacked upstream tree in the upstream venv provided
by test/integration/upstream/fetch.py.  Everything it needs is generated into
*workdir*: a tiny setup package (``nicos.conf``, a ``daemon`` setup with a
``NicosDaemon`` device and a list authenticator, and an empty ``startup``
setup), its log and pid directories, and ``daemon.out`` (its console output).
No cache server is used.

Library use::

    proc = start_upstream_daemon(14901, Path("/tmp/up"), "user", "secret")
    ...
    stop(proc)

Command line (runs until interrupted)::

    python bench/upstream_daemon.py --port 14901 --workdir /tmp/up \
        --user user --password secret [--serializer json|classic]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
FETCH_PY = REPO_ROOT / "test" / "integration" / "upstream" / "fetch.py"

SETUP_PACKAGE = "nicos_upstream_bench"
INSTRUMENT = "bench"
SERIALIZERS = {
    "json": "nicos.protocols.daemon.classic.JsonSerializer",
    "classic": "nicos.protocols.daemon.classic.ClassicSerializer",
}
LEVELS = ("guest", "user", "admin")

# The daemon loads the setup "startup" when it starts.  Without the standard
# command module a script could not even call sleep() or printinfo().
DEFAULT_STARTUP = (
    "description = 'minimal startup setup: standard commands, no devices'\n"
    "group = 'lowlevel'\n"
    "modules = ['nicos.commands.standard']\n"
)

# Run with the upstream interpreter: log in with the upstream client and wait
# until the daemon's own startup request has finished (status idle, nothing
# queued), so that callers never see the "setting up NICOS" script.
_PROBE = r"""
import sys, time
from nicos.clients.base import ConnectionData, NicosClient

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
deadline, custom_path = float(sys.argv[5]), sys.argv[6]
problems = []

class Probe(NicosClient):
    def signal(self, name, *args):
        if name in ('failed', 'error', 'broken'):
            problems.append(str(args[0]) if args else name)

while True:
    client = Probe(lambda *a: None)
    client.connect(ConnectionData(host, port, user, password), eventmask=['livedata'])
    if client.isconnected:
        if client.daemon_info.get('custom_path') != custom_path:
            client.disconnect()
            print('another daemon answers on this port: custom_path %r'
                  % client.daemon_info.get('custom_path'), file=sys.stderr)
            sys.exit(3)
        while time.monotonic() < deadline:
            st = client.ask('getstatus', default=None)
            if st is None:
                break
            if st['status'][0] < 0 and not st['requests']:
                client.disconnect()
                print('ready')
                sys.exit(0)
            time.sleep(0.05)
        client.disconnect()
    elif any(p.startswith('Error from daemon') for p in problems):
        print('login refused: ' + problems[-1], file=sys.stderr)
        sys.exit(2)
    if time.monotonic() >= deadline:
        print('probe failed: ' + '; '.join(problems[-3:]), file=sys.stderr)
        sys.exit(1)
    time.sleep(0.1)
"""


def _load_fetch() -> ModuleType:
    """Import fetch.py by path (``test`` is also the name of a stdlib package)."""
    name = "_nicos_upstream_fetch"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FETCH_PY)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {FETCH_PY}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_port_free(port: int) -> None:
    """Fail early if something listens on 127.0.0.1:*port* already."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # upstream binds with SO_REUSEADDR too, so TIME_WAIT leftovers are fine
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as err:
            raise RuntimeError(f"port {port} on 127.0.0.1 is not free: {err}") from None


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def write_setup(
    workdir: Path,
    port: int,
    user: str,
    password: str,
    *,
    level: str = "admin",
    extra_users: Sequence[tuple[str, str, str]] = (),
    serializer: str = "json",
    startup_setup: str | None = None,
) -> Path:
    """Generate the setup package under *workdir*; return the package's parent.

    *user* empty means: no authenticator at all (upstream then accepts any
    login as ADMIN).  An empty *password* gives an entry without a hash, which
    upstream accepts with any password (capped at USER when the given one is
    empty).  *extra_users* are further ``(user, password, level)`` entries.
    """
    if serializer not in SERIALIZERS:
        raise ValueError(f"serializer must be one of {sorted(SERIALIZERS)}")
    for _, _, lvl in [("", "", level), *extra_users]:
        if lvl not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, not {lvl!r}")
    root = workdir / "setup_pkg"
    inst = root / SETUP_PACKAGE / INSTRUMENT
    (inst / "setups").mkdir(parents=True, exist_ok=True)
    (workdir / "log").mkdir(exist_ok=True)
    (workdir / "pid").mkdir(exist_ok=True)
    (root / SETUP_PACKAGE / "__init__.py").write_text("")

    conf = [
        "[nicos]",
        f'setup_subdirs = ["{INSTRUMENT}"]',
        f"logging_path = {json.dumps(str(workdir / 'log'))}",
        f"pid_path = {json.dumps(str(workdir / 'pid'))}",
        "services = []",
    ]
    if os.geteuid() == 0:
        # upstream refuses to run as root unless a user is configured; the
        # numeric form works (a numeric *group* does not in 3.12.2, so none)
        conf.append(f'user = "{os.getuid()}"')
    (inst / "nicos.conf").write_text("\n".join(conf) + "\n")

    entries = []
    if user:
        entries.append((user, _sha1(password) if password else "", level))
        entries += [(u, _sha1(p) if p else "", lv) for u, p, lv in extra_users]
    if entries:
        auth = (
            "    Auth = device('nicos.services.daemon.auth.list.Authenticator',\n"
            "        hashing = 'sha1',\n"
            f"        passwd = {entries!r},\n"
            "    ),\n"
        )
        authlist = "['Auth']"
    else:
        auth, authlist = "", "[]"
    daemon_setup = (
        "description = 'upstream daemon for interoperability tests and benchmarks'\n"
        "group = 'special'\n"
        "devices = dict(\n"
        f"{auth}"
        "    Daemon = device('nicos.services.daemon.NicosDaemon',\n"
        f"        authenticators = {authlist},\n"
        f"        server = '127.0.0.1:{int(port)}',\n"
        f"        serializercls = {SERIALIZERS[serializer]!r},\n"
        "        loglevel = 'info',\n"
        "    ),\n"
        ")\n"
    )
    (inst / "setups" / "daemon.py").write_text(daemon_setup)
    if startup_setup is None:
        startup_setup = DEFAULT_STARTUP
    (inst / "setups" / "startup.py").write_text(startup_setup)
    return root


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


def _wait_ready(
    proc: subprocess.Popen,
    upstream: Any,
    workdir: Path,
    port: int,
    user: str,
    password: str,
    deadline: float,
    custom_path: Path,
) -> None:
    """Run the login probe (upstream client) while watching the daemon process.

    The probe checks the banner's ``custom_path`` (our generated setup
    package), so that another daemon already on the port is not mistaken for
    ours.  No bare TCP probing: upstream's accept loop reads a 16-byte client id from
    every new connection, and a repeated id would be taken for an event
    connection; the upstream client uses a fresh UUID each time.
    """
    probe = subprocess.Popen(
        [
            str(upstream.python),
            "-c",
            _PROBE,
            "127.0.0.1",
            str(port),
            user,
            password,
            str(deadline),
            str(custom_path),
        ],
        env=upstream.env(),
        cwd=workdir,  # not the repo: "-c" puts the cwd first on sys.path
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while probe.poll() is None:
            if proc.poll() is not None:
                raise RuntimeError(f"upstream daemon exited with {proc.returncode}")
            if time.monotonic() > deadline + 5:
                raise RuntimeError("upstream daemon not ready in time")
            time.sleep(0.05)
        _, err = probe.communicate()
        if probe.returncode != 0:
            raise RuntimeError(f"upstream daemon not ready: {err.strip()}")
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()


def start_upstream_daemon(
    port: int,
    workdir: Path,
    user: str = "user",
    password: str = "secret",
    *,
    level: str = "admin",
    extra_users: Sequence[tuple[str, str, str]] = (),
    serializer: str = "json",
    startup_setup: str | None = None,
    upstream: Any = None,
    timeout: float = 60.0,
) -> subprocess.Popen:
    """Start the upstream daemon on 127.0.0.1:*port*; return once it is usable.

    "Usable" means: it accepts connections, a login with *user*/*password*
    succeeds, and its own startup request has finished (status idle).  Its
    console output goes to ``workdir/daemon.out``, its log files to
    ``workdir/log``.  *upstream* is an ``UpstreamEnv`` (default:
    ``ensure_upstream()``).  Raises RuntimeError (with the output's tail) if
    it does not come up within *timeout* seconds; the process is then killed.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    _check_port_free(port)
    if upstream is None:
        upstream = _load_fetch().ensure_upstream()
    pkgroot = write_setup(
        workdir,
        port,
        user,
        password,
        level=level,
        extra_users=extra_users,
        serializer=serializer,
        startup_setup=startup_setup,
    )
    env = upstream.env({"INSTRUMENT": f"{SETUP_PACKAGE}.{INSTRUMENT}"}, pythonpath=[pkgroot])
    out = workdir / "daemon.out"
    deadline = time.monotonic() + timeout
    with out.open("ab") as fp:
        proc = subprocess.Popen(
            [str(upstream.python), str(upstream.daemon_script)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fp,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        custom_path = pkgroot / SETUP_PACKAGE
        _wait_ready(proc, upstream, workdir, port, user or "probe", password, deadline, custom_path)
    except BaseException as err:
        stop(proc, timeout=2.0)
        if isinstance(err, RuntimeError):
            raise RuntimeError(f"{err}\n--- {out} ---\n{_tail(out)}") from None
        raise
    proc.nicos_workdir = workdir  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """Stop the daemon: SIGTERM (upstream shuts down cleanly), then SIGKILL."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        except ProcessLookupError:
            pass
    return proc.returncode


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: start, print the connection data, run until interrupted."""
    parser = argparse.ArgumentParser(description="Run the upstream NICOS 3.12.2 daemon.")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temp dir")
    parser.add_argument("--user", default="user")
    parser.add_argument("--password", default="secret")
    parser.add_argument("--level", default="admin", choices=LEVELS)
    parser.add_argument("--serializer", default="json", choices=sorted(SERIALIZERS))
    args = parser.parse_args(argv)
    port = args.port or free_port()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="upstream-daemon-"))
    start = time.monotonic()
    proc = start_upstream_daemon(
        port, workdir, args.user, args.password, level=args.level, serializer=args.serializer
    )
    print(
        json.dumps(
            {
                "host": "127.0.0.1",
                "port": port,
                "user": args.user,
                "password": args.password,
                "pid": proc.pid,
                "workdir": str(workdir),
                "startup_seconds": round(time.monotonic() - start, 2),
            }
        ),
        flush=True,
    )
    stopping = []

    def on_signal(signum: int, frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping and proc.poll() is None:
        time.sleep(0.2)
    code = stop(proc)
    print(f"upstream daemon stopped ({code})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
