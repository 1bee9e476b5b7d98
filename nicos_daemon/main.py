"""Command-line entry point of the daemon: ``nicos-daemon [--config FILE] ...``.

Wires configuration, logging, the event bus, the script controller, the RSA key, the
authenticator and the server together, then waits for SIGTERM or SIGINT and shuts down
cleanly (a running script is stopped, queued events are flushed, exit status 0).
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .auth import make_authenticator
from .auth.passwords import hash_password_interactive
from .auth.rsakeys import KeyFileError, ServerKey
from .config import ConfigError, DaemonConfig, load_config
from .events import EventBus
from .memory import limit_heap_retention
from .server import Server
from .tls import TLSSetupError, server_context

log = logging.getLogger("nicos_daemon.main")

LOG_FILE = "daemon.log"
LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_FILE_COUNT = 5
_LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

ControllerFactory = Callable[[EventBus, DaemonConfig], Any]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nicos-daemon",
        description="Run the experiment-control daemon (NICOS protocol 24, JSON).")
    parser.add_argument("--config", metavar="PATH",
                        help="TOML configuration file (default: built-in defaults)")
    parser.add_argument("--hash-password", action="store_true",
                        help="ask for a password, print its hash for [passwd.<name>], exit")
    parser.add_argument("--allow-weak-passwords", action="store_true",
                        help="with --hash-password: hash a weak or empty password anyway "
                             "(not recommended)")
    parser.add_argument("--bind", metavar="HOST:PORT",
                        help="listen on this address instead of the configured 'server'")
    parser.add_argument("--setup", metavar="NAME", help="instrument setup to load")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser


def setup_logging(verbose: bool) -> None:
    """Log to stderr; the file handler follows once the configuration names logdir."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    root.addHandler(handler)


def add_file_logging(config: DaemonConfig) -> None:
    """Also log to a rotating file in ``config.logdir`` (created if missing)."""
    config.logdir.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        config.logdir / LOG_FILE, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_COUNT,
        encoding="utf-8")
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    logging.getLogger().addHandler(handler)


def _default_controller(bus: EventBus, config: DaemonConfig) -> Any:
    # the script machinery and the instrument are loaded only here
    from .controller import ScriptController
    from .instrument import start_instrument

    controller = ScriptController(bus, config)
    start_instrument(controller, config.setup)
    return controller


def serve(config: DaemonConfig, wait: Callable[[], None], *,
          ready: Callable[[Server], None] | None = None,
          controller_factory: ControllerFactory = _default_controller) -> int:
    """Run the daemon until ``wait()`` returns; returns the exit status.

    ``ready`` is called once the server listens.
    """
    bus = EventBus()
    try:
        server_key = ServerKey.load_or_create(config.rsakey)
        authenticator = make_authenticator(config)
        tls_context = server_context(config)
    except (KeyFileError, TLSSetupError, ImportError, OSError) as err:
        log.error("cannot start: %s", err)
        return 2
    controller = controller_factory(bus, config)
    server = Server(config, controller, bus, server_key, authenticator,
                    tls_context=tls_context)
    controller.start_threads()
    try:
        server.start()
    except OSError as err:
        log.error("cannot listen on %s: %s", config.server, err.strerror or err)
        controller.shutdown()
        return 1
    try:
        if ready is not None:
            ready(server)
        wait()
        log.info("shutting down")
    finally:
        try:
            controller.shutdown()  # stops a running script; its last events still go out
        finally:
            server.shutdown()
    log.info("daemon stopped")
    return 0


class SignalWaiter:
    """Blocks until SIGTERM or SIGINT arrives.

    The handlers only write to a pipe (no locks in signal context); ``wait`` reads it.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in self.SIGNALS}
        # The signal may be delivered to any thread; Python runs its handler
        # only in the main thread, between bytecodes, so the main thread's
        # blocking read would not notice.  The C-level wake-up fd is written
        # at once, from whichever thread got the signal.
        self._previous_wakeup = signal.set_wakeup_fd(self._write_fd,
                                                     warn_on_full_buffer=False)

    def _on_signal(self, signum: int, frame: Any) -> None:
        try:
            os.write(self._write_fd, bytes([signum]))
        except OSError:  # pipe full: a wake-up is already pending
            pass

    def wait(self) -> None:
        signum = os.read(self._read_fd, 1)[0]
        log.info("received %s", signal.Signals(signum).name)

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous_wakeup)
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        os.close(self._read_fd)
        os.close(self._write_fd)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.allow_weak_passwords and not args.hash_password:
        # Not silently ignored: the daemon's own override is a configuration key.
        parser.error("--allow-weak-passwords only goes with --hash-password; for users "
                     "without a password set allow_weak_passwords = true in the "
                     "configuration")
    if args.hash_password:
        return hash_password_interactive(allow_weak=args.allow_weak_passwords)
    setup_logging(args.verbose)
    limit_heap_retention()
    overrides: dict[str, object] = {}
    if args.bind is not None:
        overrides["server"] = args.bind
    if args.setup is not None:
        overrides["setup"] = args.setup
    try:
        config = load_config(args.config, overrides)
        add_file_logging(config)
    except ConfigError as err:
        log.error("%s", err)
        return 2
    except OSError as err:
        log.error("cannot write the log file in %s: %s", config.logdir, err)
        return 2

    def announce(server: Server) -> None:
        host, port = server.address
        tls = ", TLS only" if config.tls else ""
        print(f"nicos-daemon listening on {host}:{port} (authmethod {config.authmethod}{tls})",
              flush=True)

    waiter = SignalWaiter()
    try:
        status = serve(config, waiter.wait, ready=announce)
    finally:
        waiter.close()
    exit_despite_lingering_threads(status)
    return status


# Threads still running after the shutdown get this long to end on their own.
LINGER_SECONDS = 2.0


def exit_despite_lingering_threads(status: int, linger: float = LINGER_SECONDS) -> None:
    """Exit now if threads a script started (not daemon threads, stuck in code no
    stop reaches) would otherwise keep the process alive after the shutdown;
    returns when there are none."""
    deadline = time.monotonic() + linger
    for thread in _lingering_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    lingering = _lingering_threads()
    if not lingering:
        return
    log.warning("exiting although %d thread(s) started by scripts still run: %s",
                len(lingering), ", ".join(thread.name for thread in lingering))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # interpreter shutdown would wait for them forever


def _lingering_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate()
            if not thread.daemon and thread is not threading.main_thread()
            and thread.is_alive()]


if __name__ == "__main__":
    sys.exit(main())
