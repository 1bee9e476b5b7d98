"""Daemon configuration: one TOML file, validated completely at start-up.

Every key is checked for name, type and range before the daemon opens a socket, so a
typo stops the start with a message naming the key and the file instead of silently
falling back to a default. See docs/configuration.md for the meaning of each key.
"""

import ipaddress
import logging
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nicos_daemon.auth.levels import GUEST, parse_level
from nicos_daemon.auth.passwords import hash_problem

log = logging.getLogger("nicos_daemon.config")

DEFAULT_PORT = 1301
AUTH_METHODS = ("none", "list", "pam")
MIB = 1024 * 1024

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """The configuration is unusable; the message names the file and the key."""


@dataclass(frozen=True)
class PasswdEntry:
    hash: str = field(repr=False)
    level: int


@dataclass(frozen=True)
class DaemonConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    authmethod: str = "list"
    # repr=False keeps password hashes out of logs that print the configuration.
    passwd: Mapping[str, PasswdEntry] = field(
        default_factory=lambda: MappingProxyType({}), repr=False
    )
    pam_service: str = "login"
    pam_defaultlevel: int = GUEST
    trustedhosts: tuple[IPNetwork, ...] = ()
    maxlogins: int = 10
    reuseaddress: bool = True
    autosimulate: bool = False
    updateinterval: float = 0.2
    datadir: Path = Path("data")
    logdir: Path = Path("log")
    setup: str = "demo"
    rsakey: Path | None = None
    max_command_bytes: int = 16 * MIB
    login_timeout: float = 5.0
    event_queue_limit: int = 10_000
    throttle_failures: int = 5
    throttle_window: float = 60.0
    allow_insecure: bool = False
    allow_weak_passwords: bool = False
    # TLS on both sockets; off unless certificate and key are configured.
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    tls_cafile: Path | None = None
    tls_require_client_cert: bool = False
    # The file the values came from (None: built-in defaults only).
    source: Path | None = None

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` as passed to ``socket.bind``."""
        return (self.host, self.port)

    @property
    def tls(self) -> bool:
        """Whether clients must connect with TLS."""
        return self.tls_certfile is not None

    @property
    def server(self) -> str:
        """The listening address in the configuration's own ``host:port`` notation."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def is_trusted(self, peer_ip: str) -> bool:
        """Whether a client at ``peer_ip`` may connect (no DNS involved, §11.10)."""
        if not self.trustedhosts:
            return True
        try:
            address = ipaddress.ip_address(peer_ip)
        except ValueError:
            return False
        # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(
            address.version == network.version and address in network
            for network in self.trustedhosts
        )


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------
# Conversion of single keys. Each converter takes the raw TOML value and a context and
# returns the DaemonConfig fields it sets, or raises ConfigError via ctx.fail.


@dataclass(frozen=True)
class _Context:
    origin: str  # file name or "overrides", for messages
    base_dir: Path  # relative paths are resolved against this

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.origin}: key {key!r}: {message}")

    def wrong_type(self, key: str, expected: str, value: object) -> ConfigError:
        return self.fail(key, f"expected {expected}, got {type(value).__name__} {value!r}")


_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")
_BRACKETED = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?")
_SETUP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,99}")
_PAM_SERVICE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_MAX_USER_CHARS = 64
_MAX_TRUSTED_ENTRIES = 1000
_MAX_USERS = 10_000


def _require_str(key: str, value: object, ctx: _Context) -> str:
    if not isinstance(value, str):
        raise ctx.wrong_type(key, "a string", value)
    return value


def _parse_port(key: str, text: str, ctx: _Context) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ctx.fail(key, f"port {text!r} is not a number from 0 to 65535")
    return int(text)


def _convert_server(key: str, value: object, ctx: _Context) -> dict[str, Any]:
    text = _require_str(key, value, ctx)
    bracketed = _BRACKETED.fullmatch(text)
    if bracketed:
        host, port_text = bracketed.group(1), bracketed.group(2)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ctx.fail(key, f"{host!r} in brackets is not an IPv6 address") from None
    elif text.count(":") > 1 or text.startswith("["):
        raise ctx.fail(key, f"{text!r}: write IPv6 addresses in brackets, e.g. '[::1]:1301'")
    else:
        host, _, port_text = text.partition(":")
        if not host:
            raise ctx.fail(key, "the host is empty; use '0.0.0.0' to listen on all "
                                "IPv4 interfaces")
        if not _HOSTNAME.fullmatch(host):
            raise ctx.fail(key, f"{host!r} is not a valid host name or address")
        if ":" in text and not port_text:
            raise ctx.fail(key, f"{text!r} has a colon but no port")
    port = DEFAULT_PORT if port_text is None or port_text == "" else _parse_port(
        key, port_text, ctx)
    return {"host": host, "port": port}


def _convert_authmethod(key: str, value: object, ctx: _Context) -> dict[str, Any]:
    text = _require_str(key, value, ctx)
    if text not in AUTH_METHODS:
        raise ctx.fail(key, f"{text!r} is not one of {', '.join(AUTH_METHODS)}")
    return {key: text}


def _convert_level(key: str, value: object, ctx: _Context) -> int:
    try:
        return parse_level(value)
    except ValueError as err:
        raise ctx.fail(key, str(err)) from None


def _check_user_name(key: str, name: str, ctx: _Context) -> None:
    if not name or len(name) > _MAX_USER_CHARS:
        raise ctx.fail(key, f"user names must have 1 to {_MAX_USER_CHARS} characters")
    # The server strips the login it receives, so such a name could never log in.
    if name != name.strip() or not name.isprintable():
        raise ctx.fail(key, f"user name {name!r} has surrounding blanks or control characters")


def _convert_passwd(key: str, value: object, ctx: _Context) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ctx.wrong_type(key, "a table of users ([passwd.<name>] sections)", value)
    if len(value) > _MAX_USERS:
        raise ctx.fail(key, f"more than {_MAX_USERS} users")
    users: dict[str, PasswdEntry] = {}
    for name, entry in value.items():
        entry_key = f"{key}.{name}"
        _check_user_name(entry_key, name, ctx)
        if not isinstance(entry, dict):
            raise ctx.wrong_type(entry_key, "a table with 'hash' and 'level'", entry)
        unknown = sorted(set(entry) - {"hash", "level"})
        if unknown:
            raise ctx.fail(f"{entry_key}.{unknown[0]}", "unknown key (allowed: hash, level)")
        if "hash" not in entry:
            raise ctx.fail(entry_key, "missing 'hash'; create one with 'nicos-daemon "
                                      "--hash-password' (an account without a password "
                                      "needs hash = \"\" and allow_weak_passwords = true)")
        if "level" not in entry:
            raise ctx.fail(entry_key, "missing 'level'")
        stored = entry["hash"]
        if not isinstance(stored, str):
            # The value itself is not echoed: it might be a password typed in by mistake.
            raise ctx.fail(f"{entry_key}.hash", f"expected a string, got {type(stored).__name__}")
        # An empty hash (no password) is judged in _check_consistency, which knows
        # whether allow_weak_passwords is set, wherever in the file that key is.
        problem = hash_problem(stored) if stored else None
        if problem is not None:
            raise ctx.fail(f"{entry_key}.hash", f"{problem}; create one with "
                                                "'nicos-daemon --hash-password'")
        level = _convert_level(f"{entry_key}.level", entry["level"], ctx)
        users[name] = PasswdEntry(hash=stored, level=level)
    return {key: MappingProxyType(users)}


def _convert_trustedhosts(key: str, value: object, ctx: _Context) -> dict[str, Any]:
    if not isinstance(value, list):
        raise ctx.wrong_type(key, "a list of IP addresses or CIDR networks", value)
    if len(value) > _MAX_TRUSTED_ENTRIES:
        raise ctx.fail(key, f"more than {_MAX_TRUSTED_ENTRIES} entries")
    networks: list[IPNetwork] = []
    for entry in value:
        if not isinstance(entry, str):
            raise ctx.wrong_type(key, "a list of strings", entry)
        try:
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError as err:
            raise ctx.fail(key, f"{entry!r} is not an IP address or CIDR network ({err}); "
                                "host names are not accepted because reverse DNS can be "
                                "forged") from None
    return {key: tuple(networks)}


def _int_converter(minimum: int, maximum: int) -> Callable[[str, object, _Context], dict]:
    def convert(key: str, value: object, ctx: _Context) -> dict[str, Any]:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ctx.wrong_type(key, "an integer", value)
        if not minimum <= value <= maximum:
            raise ctx.fail(key, f"{value} is outside {minimum}..{maximum}")
        return {key: value}
    return convert


def _float_converter(minimum: float, maximum: float) -> Callable[[str, object, _Context], dict]:
    def convert(key: str, value: object, ctx: _Context) -> dict[str, Any]:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ctx.wrong_type(key, "a number", value)
        number = float(value)
        if not math.isfinite(number) or not minimum <= number <= maximum:
            raise ctx.fail(key, f"{value} is outside {minimum:g}..{maximum:g}")
        return {key: number}
    return convert


def _convert_bool(key: str, value: object, ctx: _Context) -> dict[str, Any]:
    if not isinstance(value, bool):
        raise ctx.wrong_type(key, "true or false", value)
    return {key: value}


def _pattern_converter(pattern: re.Pattern[str], what: str) -> Callable[..., dict]:
    def convert(key: str, value: object, ctx: _Context) -> dict[str, Any]:
        text = _require_str(key, value, ctx)
        if not pattern.fullmatch(text):
            raise ctx.fail(key, f"{text!r} is not {what}")
        return {key: text}
    return convert


def _resolve(value: str, base_dir: Path) -> Path:
    # normpath folds "etc/../data" so that logs show the directory actually used.
    return Path(os.path.normpath(base_dir / Path(value).expanduser()))


def _convert_path(key: str, value: object, ctx: _Context) -> dict[str, Any]:
    text = _require_str(key, value, ctx)
    if not text or "\0" in text:
        raise ctx.fail(key, "the path is empty or contains a NUL character")
    return {key: _resolve(text, ctx.base_dir)}


def _convert_pam_defaultlevel(key: str, value: object, ctx: _Context) -> dict[str, Any]:
    return {key: _convert_level(key, value, ctx)}


_CONVERTERS: dict[str, Callable[[str, object, _Context], dict[str, Any]]] = {
    "server": _convert_server,
    "authmethod": _convert_authmethod,
    "passwd": _convert_passwd,
    "pam_service": _pattern_converter(_PAM_SERVICE, "a PAM service name"),
    "pam_defaultlevel": _convert_pam_defaultlevel,
    "trustedhosts": _convert_trustedhosts,
    "maxlogins": _int_converter(1, 10_000),
    "reuseaddress": _convert_bool,
    "autosimulate": _convert_bool,
    "updateinterval": _float_converter(0.01, 3600.0),
    "datadir": _convert_path,
    "logdir": _convert_path,
    "setup": _pattern_converter(_SETUP_NAME, "a setup name (letters, digits, _ and -)"),
    "rsakey": _convert_path,
    "max_command_bytes": _int_converter(1024, 1024 * MIB),
    "login_timeout": _float_converter(0.1, 300.0),
    "event_queue_limit": _int_converter(1, 10_000_000),
    "throttle_failures": _int_converter(1, 1000),
    "throttle_window": _float_converter(0.1, 86_400.0),
    "allow_insecure": _convert_bool,
    "allow_weak_passwords": _convert_bool,
    "tls_certfile": _convert_path,
    "tls_keyfile": _convert_path,
    "tls_cafile": _convert_path,
    "tls_require_client_cert": _convert_bool,
}

CONFIG_KEYS: tuple[str, ...] = tuple(_CONVERTERS)


def _convert_all(raw: Mapping[str, object], ctx: _Context) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        converter = _CONVERTERS.get(key)
        if converter is None:
            raise ConfigError(f"{ctx.origin}: unknown key {key!r} "
                              f"(known keys: {', '.join(CONFIG_KEYS)})")
        fields.update(converter(key, value, ctx))
    return fields


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as config_file:
            return tomllib.load(config_file)
    except OSError as err:
        raise ConfigError(f"cannot read configuration file {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None


def _check_tls_keys(config: DaemonConfig, origin: str) -> None:
    # The files themselves are loaded at start-up (nicos_daemon.tls), like rsakey.
    if (config.tls_certfile is None) != (config.tls_keyfile is None):
        given, missing = (("tls_certfile", "tls_keyfile") if config.tls_keyfile is None
                          else ("tls_keyfile", "tls_certfile"))
        raise ConfigError(f"{origin}: key {given!r} is set but {missing!r} is not; TLS "
                          "needs both (they may name the same file if it holds both)")
    if config.tls_require_client_cert and config.tls_cafile is None:
        raise ConfigError(f"{origin}: key 'tls_require_client_cert' needs 'tls_cafile', "
                          "the CA certificate(s) that client certificates must be signed by")
    if config.tls_cafile is not None and not config.tls_require_client_cert:
        raise ConfigError(f"{origin}: key 'tls_cafile' is only used with "
                          "tls_require_client_cert = true")
    if config.tls_require_client_cert and not config.tls:
        raise ConfigError(f"{origin}: key 'tls_require_client_cert' needs TLS, i.e. "
                          "'tls_certfile' and 'tls_keyfile'")


def _check_passwordless_users(config: DaemonConfig, origin: str) -> None:
    # Checked whatever the authmethod: the entry would become a live account as soon
    # as someone switches to "list".
    for name, entry in config.passwd.items():
        if entry.hash:
            continue
        if not config.allow_weak_passwords:
            raise ConfigError(
                f"{origin}: key 'passwd.{name}.hash': the hash is empty, so user {name!r} "
                "would have no password and anyone could log in as them with an empty "
                "one; create a hash with 'nicos-daemon --hash-password', or set "
                "allow_weak_passwords = true if you really mean it")
        log.warning("user %r has no password (allow_weak_passwords): anyone who can "
                    "reach the daemon can log in as %r", name, name)


def _check_consistency(config: DaemonConfig, origin: str) -> None:
    _check_tls_keys(config, origin)
    if config.authmethod == "none" and not is_loopback_host(config.host):
        if not config.allow_insecure:
            raise ConfigError(
                f"{origin}: authmethod 'none' makes every client an admin and is only "
                f"allowed on a loopback address, but server is {config.server}; use "
                "'list' or 'pam', or set allow_insecure = true if you really mean it"
            )
        log.warning("authmethod 'none' on %s with allow_insecure: anyone who can reach "
                    "this port has full control", config.server)
    _check_passwordless_users(config, origin)
    if config.authmethod == "list" and not config.passwd:
        log.warning("%s: authmethod 'list' without [passwd] users: nobody can log in",
                    origin)


def load_config(
    path: str | Path | None, overrides: Mapping[str, object] | None = None
) -> DaemonConfig:
    """Read and validate the configuration.

    ``path`` None gives the built-in defaults. ``overrides`` (e.g. from the command
    line) take the same keys as the file and win over it; relative paths in the file
    are resolved against the file's directory, those in overrides against the current
    directory.
    """
    cwd = Path.cwd()
    source: Path | None = None
    base_dir = cwd
    raw: dict[str, Any] = {}
    if path is not None:
        source = Path(path).expanduser().absolute()
        base_dir = source.parent
        raw = _read_toml(source)
    origin = str(source) if source is not None else "<defaults>"

    # Default paths are relative as well and follow the same rule as configured ones.
    fields: dict[str, Any] = {
        "datadir": _resolve(str(DaemonConfig.datadir), base_dir),
        "logdir": _resolve(str(DaemonConfig.logdir), base_dir),
    }
    fields.update(_convert_all(raw, _Context(origin, base_dir)))
    if overrides:
        fields.update(_convert_all(overrides, _Context("overrides", cwd)))
    config = DaemonConfig(**fields, source=source)
    _check_consistency(config, origin)
    log.info("configuration loaded from %s: server %s, authmethod %s, setup %s%s",
             origin, config.server, config.authmethod, config.setup,
             ", TLS" if config.tls else "")
    return config
