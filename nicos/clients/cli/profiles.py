"""Connection profiles and the client's own directories.

Profiles live in ``$XDG_CONFIG_HOME/nicos-client/profiles.toml`` (default
``~/.config/nicos-client/profiles.toml``)::

    default = "tas"            # profile used when no target is given

    [profiles.tas]
    host = "tasctrl.example.org"
    port = 1301                # optional, default 1301
    user = "operator"          # optional, default: your login name
    viewonly = false           # optional
    color = "auto"             # optional: "auto", "always" or "never"
    tls = true                 # optional: connect with TLS (daemons of this project only)
    tls_ca = "lab-ca.pem"      # optional: CA file to verify the daemon's certificate
    tls_cert = "me.pem"        # optional: client certificate, if the daemon requires one
    tls_key = "me.key"         # optional: its key, if not in tls_cert

Any ``tls_*`` key implies ``tls = true``; relative paths are taken from the profile
file's directory.  Turning certificate verification off is possible on the command
line only (``--tls-no-verify``), never in a profile.

Unknown keys are errors, so that a typo never silently falls back to a default.
Passwords are never read from this file: a ``password`` key is refused.

The command history is kept under ``$XDG_STATE_HOME/nicos-client/`` (default
``~/.local/state/nicos-client/``), readable by the owner only.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nicos.protocols.daemon import DEFAULT_PORT

APP_DIR = 'nicos-client'
PROFILES_FILE = 'profiles.toml'
HISTORY_FILE = 'history'
COLOR_CHOICES = ('auto', 'always', 'never')

_PROFILE_KEYS = {'host': str, 'port': int, 'user': str, 'viewonly': bool, 'color': str,
                 'tls': bool, 'tls_ca': str, 'tls_cert': str, 'tls_key': str}
TLS_FILE_KEYS = ('tls_ca', 'tls_cert', 'tls_key')
_TOP_KEYS = {'default', 'profiles'}


class ProfileError(Exception):
    """The profile file is unreadable or invalid, or a target cannot be parsed."""


@dataclass
class Target:
    """Where to connect and as whom; fields left None were not given."""

    host: str
    port: int = DEFAULT_PORT
    user: str | None = None
    viewonly: bool = False
    color: str = 'auto'
    profile: str | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def address(self) -> str:
        return f'{self.host}:{self.port}'


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/nicos-client`` (default ``~/.config/nicos-client``)."""
    return _xdg_dir('XDG_CONFIG_HOME', '.config') / APP_DIR


def state_dir() -> Path:
    """``$XDG_STATE_HOME/nicos-client`` (default ``~/.local/state/nicos-client``)."""
    return _xdg_dir('XDG_STATE_HOME', '.local/state') / APP_DIR


def _xdg_dir(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable, '')
    # The XDG spec says relative values are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def profiles_path() -> Path:
    return config_dir() / PROFILES_FILE


def history_path() -> Path:
    """Path of the history file; its directory is created private (0700)."""
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / HISTORY_FILE
    if not path.exists():
        # The history holds whatever was typed; keep it private from the start.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
    return path


@dataclass
class Profiles:
    default: str | None
    entries: dict[str, dict[str, Any]]


def load_profiles(path: Path | None = None) -> Profiles:
    """Read and check the profile file; a missing file means no profiles."""
    path = profiles_path() if path is None else path
    try:
        with open(path, 'rb') as stream:
            data = tomllib.load(stream)
    except FileNotFoundError:
        return Profiles(None, {})
    except OSError as err:
        raise ProfileError(f'cannot read {path}: {err.strerror or err}') from None
    except tomllib.TOMLDecodeError as err:
        raise ProfileError(f'{path}: invalid TOML: {err}') from None
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ProfileError(f'{path}: unknown key(s) {", ".join(sorted(unknown))}; '
                           f'expected "default" and [profiles.NAME] tables')
    entries = data.get('profiles', {})
    if not isinstance(entries, dict):
        raise ProfileError(f'{path}: "profiles" must be a table of [profiles.NAME] tables')
    for name, entry in entries.items():
        _check_profile(path, name, entry)
        for key in TLS_FILE_KEYS:
            if key in entry:
                entry[key] = os.path.join(path.parent, os.path.expanduser(entry[key]))
    default = data.get('default')
    if default is not None and (not isinstance(default, str) or default not in entries):
        raise ProfileError(f'{path}: default = {default!r} names no [profiles.*] table')
    return Profiles(default, entries)


def _check_profile(path: Path, name: str, entry: Any) -> None:
    where = f'{path}: [profiles.{name}]'
    if not isinstance(entry, dict):
        raise ProfileError(f'{where} must be a table')
    if 'password' in entry or 'passwd' in entry:
        raise ProfileError(f'{where}: passwords are never stored in profiles; remove the key '
                           f'and type the password, or set NICOS_PASSWORD for automation')
    for key, value in entry.items():
        kind = _PROFILE_KEYS.get(key)
        if kind is None:
            raise ProfileError(f'{where}: unknown key {key!r} (allowed: '
                               f'{", ".join(_PROFILE_KEYS)})')
        if type(value) is not kind:
            raise ProfileError(f'{where}: {key} must be a {kind.__name__}, not {value!r}')
    if 'host' not in entry or not entry['host']:
        raise ProfileError(f'{where}: "host" is required')
    if 'port' in entry and not 0 < entry['port'] < 65536:
        raise ProfileError(f'{where}: port {entry["port"]} is out of range')
    if entry.get('color', 'auto') not in COLOR_CHOICES:
        raise ProfileError(f'{where}: color must be one of {", ".join(COLOR_CHOICES)}')
    for key in TLS_FILE_KEYS:
        if key in entry and not entry[key]:
            raise ProfileError(f'{where}: {key} is empty')
    if entry.get('tls') is False and any(key in entry for key in TLS_FILE_KEYS):
        raise ProfileError(f'{where}: tls = false contradicts the tls_* file keys')


def parse_address(text: str) -> tuple[str | None, str, int | None]:
    """Split ``[user@]host[:port]`` into (user, host, port); IPv6 hosts go in
    brackets (``[::1]:1301``)."""
    user: str | None = None
    if '@' in text:
        user, _, text = text.rpartition('@')
        if not user:
            raise ProfileError('empty user name before "@"')
    port: int | None = None
    if text.startswith('['):
        host, bracket, rest = text[1:].partition(']')
        if not bracket or (rest and not rest.startswith(':')):
            raise ProfileError(f'invalid address {text!r}: use [IPv6]:port')
        port_text = rest[1:] if rest else None
    elif text.count(':') == 1:
        host, _, port_text = text.partition(':')
    else:
        host, port_text = text, None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ProfileError(f'invalid port {port_text!r}')
        port = int(port_text)
    if not host:
        raise ProfileError('no host given')
    return user, host, port


def resolve_target(text: str | None, profiles: Profiles) -> Target:
    """The connection target for the command-line argument *text*.

    *text* is ``[user@]host[:port]`` where host may be a profile name; user and
    port given on the command line override the profile's.  Without *text* the
    profile named by ``default`` is used.
    """
    if text is None:
        if profiles.default is None:
            raise ProfileError(f'no host given and no default profile in {profiles_path()}')
        text = profiles.default
    user, host, port = parse_address(text)
    entry = profiles.entries.get(host)
    if entry is None:
        return Target(host=host, port=port or DEFAULT_PORT, user=user)
    return Target(host=entry['host'], port=port or entry.get('port', DEFAULT_PORT),
                  user=user or entry.get('user'), viewonly=entry.get('viewonly', False),
                  color=entry.get('color', 'auto'), profile=host,
                  tls=entry.get('tls', False) or any(key in entry for key in TLS_FILE_KEYS),
                  tls_ca=entry.get('tls_ca'), tls_cert=entry.get('tls_cert'),
                  tls_key=entry.get('tls_key'))
