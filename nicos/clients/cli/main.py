"""Entry point of ``nicos-client``: command line, profiles, password, then the
interactive prompt or a non-interactive run.

Usage::

    nicos-client [options] [[user@]host[:port] | PROFILE[:port]]
    nicos-client [options] TARGET -c CODE          # run CODE, wait, exit with its result
    nicos-client [options] TARGET run FILE [--wait]
    nicos-client TARGET --json                     # print every event as a JSON line
"""

from __future__ import annotations

import argparse
import getpass
import os
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from nicos.clients.base import ClientError, LoginFailed
from nicos.clients.tls import CertificateFileError, client_context

from . import batch, profiles, render
from .session import CliClient

PASSWORD_ENV = 'NICOS_PASSWORD'
COLOR_ENV_OFF = 'NO_COLOR'


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    exits = '\n'.join(f'  {code:>3}  {text}' for code, text in batch.EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog='nicos-client',
        usage='%(prog)s [options] [[USER@]HOST[:PORT] | PROFILE]\n'
              '       %(prog)s [options] TARGET -c CODE\n'
              '       %(prog)s [options] TARGET run FILE [--wait]',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Command-line client of the experiment-control daemon.',
        epilog=f'The password is asked for without echo; for automation set '
               f'${PASSWORD_ENV}.\nProfiles: {profiles.profiles_path()}\n'
               f'See docs/cli.md.\n\nexit status:\n{exits}')
    parser.add_argument('target', nargs='?', metavar='[USER@]HOST[:PORT]',
                        help='daemon address, or the name of a profile (default: the '
                             'profile named by "default" in the profile file)')
    parser.add_argument('action', nargs='*', metavar='run FILE',
                        help='run a local script file (non-interactive)')
    parser.add_argument('-c', '--command', metavar='CODE',
                        help='run CODE ("-" reads it from stdin), stream its output and '
                             'exit with its result')
    parser.add_argument('--wait', action='store_true',
                        help='with "run FILE": wait for the end and exit with its result')
    parser.add_argument('--json', action='store_true',
                        help='print events as JSON lines (non-interactive); without -c '
                             'or run: print all events until interrupted')
    parser.add_argument('--viewonly', action='store_true',
                        help='refuse to start, change or steer scripts '
                             '(/emergency stays available)')
    tls = parser.add_argument_group(
        'TLS', 'only for daemons of this project with TLS configured; upstream NICOS '
               'daemons do not speak TLS (see docs/cli.md)')
    tls.add_argument('--tls', action='store_true',
                     help="connect with TLS, verifying the daemon's certificate against "
                          "the system's trusted CAs (or --tls-ca)")
    tls.add_argument('--tls-ca', metavar='FILE',
                     help='trust only the CA certificate(s) in this PEM file, e.g. the '
                          "daemon's self-signed certificate (implies --tls)")
    tls.add_argument('--tls-cert', metavar='FILE',
                     help='client certificate (PEM) for daemons that require one '
                          '(implies --tls)')
    tls.add_argument('--tls-key', metavar='FILE',
                     help="the client certificate's key, if not in --tls-cert")
    tls.add_argument('--tls-no-verify', action='store_true',
                     help="FOR TESTS ONLY: accept any certificate; encrypted but "
                          "anyone in between can read and change everything (implies --tls)")
    parser.add_argument('--color', choices=profiles.COLOR_CHOICES, default=None,
                        help='colour the output (default: auto, i.e. on a terminal)')
    parser.add_argument('-v', '--verbose', action='store_true',
                        help='also show debug messages')
    return parser


def _script_action(args: argparse.Namespace, known: profiles.Profiles) -> str | None:
    """The file of ``run FILE`` (None without), after fixing up ``run FILE``
    given without a target."""
    action = list(args.action)
    if args.target == 'run' and len(action) == 1 and 'run' not in known.entries:
        args.target, action = None, ['run', *action]
    if not action:
        return None
    if len(action) != 2 or action[0] != 'run':
        raise UsageError(f'unexpected arguments {" ".join(action)!r}; did you mean "run FILE"?')
    return action[1]


def get_password(user: str, address: str) -> str:
    """From $NICOS_PASSWORD (removed from the environment, so that editors and
    other children do not inherit it), else asked on the terminal without echo."""
    password = os.environ.pop(PASSWORD_ENV, None)
    if password is not None:
        return password
    try:
        fd = os.open('/dev/tty', os.O_RDWR | os.O_NOCTTY)
    except OSError:
        raise UsageError(f'no terminal to ask for the password; set ${PASSWORD_ENV}') from None
    os.close(fd)
    return getpass.getpass(f'Password for {user}@{address}: ')


def tls_context(args: argparse.Namespace, target: profiles.Target) -> ssl.SSLContext | None:
    """The TLS context from the command line and the profile (the command line
    wins), or None for a plain connection."""
    cafile = args.tls_ca or target.tls_ca
    certfile = args.tls_cert or target.tls_cert
    keyfile = args.tls_key or target.tls_key
    if not (args.tls or args.tls_no_verify or target.tls or cafile or certfile or keyfile):
        return None
    if args.tls_no_verify:
        if cafile:
            raise UsageError('--tls-no-verify accepts any certificate; drop it, or the CA '
                             'file (--tls-ca, or tls_ca in the profile)')
        sys.stderr.write("nicos-client: WARNING: --tls-no-verify: the daemon's certificate "
                         'is not checked; anyone in between can read and change the whole '
                         'session\n')
    try:
        return client_context(cafile, certfile=certfile, keyfile=keyfile,
                              verify=not args.tls_no_verify)
    except CertificateFileError as err:
        raise UsageError(str(err)) from None


def use_color(choice: str, json_lines: bool) -> bool:
    if json_lines or choice == 'never':
        return False
    if choice == 'always':
        return True
    return sys.stdout.isatty() and not os.environ.get(COLOR_ENV_OFF) \
        and os.environ.get('TERM', '') != 'dumb'


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    try:
        return _main(args)
    except (UsageError, profiles.ProfileError) as err:
        parser.print_usage(sys.stderr)
        sys.stderr.write(f'nicos-client: {err}\n')
        return batch.EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write('\n')
        return batch.EXIT_INTERRUPTED


def _main(args: argparse.Namespace) -> int:
    known = profiles.load_profiles()
    script_file = _script_action(args, known)
    target = profiles.resolve_target(args.target, known)
    if args.command is not None and script_file is not None:
        raise UsageError('give either -c CODE or run FILE, not both')
    if args.wait and script_file is None:
        raise UsageError('--wait goes with "run FILE" (-c always waits)')
    interactive = args.command is None and script_file is None and not args.json
    if interactive and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError('not a terminal: use -c CODE or run FILE for non-interactive use')
    code, name = _read_code(args.command, script_file)
    tls = tls_context(args, target)

    user = target.user or getpass.getuser()
    password = get_password(user, target.address)
    paint = render.Painter(use_color(args.color or target.color, args.json))
    viewonly = args.viewonly or target.viewonly
    if interactive:
        return _interactive(target, user, password, paint, viewonly, args.verbose, tls)
    client = CliClient(batch.StreamView(), paint, announce=False, json_lines=args.json,
                       verbose=args.verbose, auto_reconnect=False)
    status = _connect(client, target, user, password, viewonly, tls)
    if status is not None:
        return status
    try:
        if code is not None:
            return batch.run_script(client, code, name, wait=args.wait or script_file is None)
        return batch.monitor(client)
    finally:
        client.close()


def _interactive(target: profiles.Target, user: str, password: str, paint: render.Painter,
                 viewonly: bool, verbose: bool, tls: ssl.SSLContext | None) -> int:
    # prompt_toolkit is imported only for the interactive mode
    from .interactive import InteractiveShell, TerminalView

    view = TerminalView()
    client = CliClient(view, paint, verbose=verbose)
    status = _connect(client, target, user, password, viewonly, tls)
    if status is not None:
        return status
    try:
        return InteractiveShell(client, view, paint, target.address, _history_file()).run()
    finally:
        client.close()


def _connect(client: CliClient, target: profiles.Target, user: str, password: str,
             viewonly: bool, tls: ssl.SSLContext | None) -> int | None:
    """Connect and log in; an exit status on failure, else None."""
    try:
        client.open(target.host, target.port, user, password, viewonly=viewonly, tls=tls)
    except LoginFailed as err:
        sys.stderr.write(f'nicos-client: login to {target.address} as {user} failed: {err}\n')
        return batch.EXIT_LOGIN
    except ClientError as err:
        sys.stderr.write(f'nicos-client: {err}\n')
        return batch.EXIT_CONNECTION
    return None


def _read_code(command: str | None, script_file: str | None) -> tuple[str | None, str]:
    """(code, script name) for -c or run FILE."""
    if command == '-':
        code = sys.stdin.read()
        # one line stays one line (the daemon then shows the value of an expression)
        return (code.strip() if '\n' not in code.strip() else code), ''
    if command is not None:
        return command, ''
    if script_file is None:
        return None, ''
    path = os.path.abspath(os.path.expanduser(script_file))
    try:
        with open(path, encoding='utf-8') as stream:
            return stream.read(), path
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f'cannot read {script_file}: '
                         f'{getattr(err, "strerror", None) or err}') from None


def _history_file() -> Path | None:
    try:
        return profiles.history_path()
    except OSError as err:
        sys.stderr.write(f'nicos-client: no history file: {err}\n')
        return None


__all__ = ['build_parser', 'main']
