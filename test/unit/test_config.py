"""Loading and validation of the daemon configuration file."""

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from nicos_daemon.auth.passwords import hash_password, password_problem
from nicos_daemon.config import CONFIG_KEYS, ConfigError, DaemonConfig, load_config

REPO = Path(__file__).resolve().parents[2]

# Computed once: scrypt is deliberately slow.
HASH = hash_password("correct-Horse-7")


def write(tmp_path: Path, text: str, name: str = "daemon.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.address == ("127.0.0.1", 1301)
    assert config.authmethod == "list"
    assert dict(config.passwd) == {}
    assert config.pam_service == "login"
    assert config.pam_defaultlevel == 0
    assert config.trustedhosts == ()
    assert config.maxlogins == 10
    assert config.reuseaddress is True
    assert config.updateinterval == 0.2
    assert config.datadir == tmp_path / "data"
    assert config.logdir == tmp_path / "log"
    assert config.setup == "demo"
    assert config.rsakey is None
    assert config.max_command_bytes == 16 * 1024 * 1024
    assert config.login_timeout == 5.0
    assert config.event_queue_limit == 10_000
    assert config.throttle_failures == 5
    assert config.throttle_window == 60.0
    assert config.allow_insecure is False
    assert config.allow_weak_passwords is False
    assert config.tls_certfile is None and config.tls_keyfile is None
    assert config.tls_cafile is None and config.tls_require_client_cert is False
    assert config.tls is False
    assert config.source is None


def test_empty_file_gives_defaults_with_paths_next_to_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    subdir = tmp_path / "etc"
    subdir.mkdir()
    config = load_config(write(subdir, ""))
    assert config.datadir == subdir / "data"
    assert config.logdir == subdir / "log"
    assert config.source == subdir / "daemon.toml"
    assert config.server == "127.0.0.1:1301"


EVERY_KEY = f"""
server = "[::1]:1400"
authmethod = "pam"
pam_service = "nicos"
pam_defaultlevel = "user"
trustedhosts = ["127.0.0.1", "10.1.0.0/16", "fd00::/8"]
maxlogins = 3
reuseaddress = false
autosimulate = true
updateinterval = 1
datadir = "var/data"
logdir = "/var/log/nicos"
setup = "tas_main"
rsakey = "keys/daemon.pem"
max_command_bytes = 2048
login_timeout = 2.5
event_queue_limit = 77
throttle_failures = 9
throttle_window = 30.5
allow_insecure = true
allow_weak_passwords = true
tls_certfile = "tls/daemon.crt"
tls_keyfile = "/etc/nicos/daemon.key"
tls_cafile = "tls/clients-ca.pem"
tls_require_client_cert = true

[passwd.alice]
hash = "{HASH}"
level = "admin"

[passwd.bob]
hash = "{HASH}"
level = 10
"""


def test_every_key_is_read(tmp_path):
    config = load_config(write(tmp_path, EVERY_KEY))
    assert config.host == "::1" and config.port == 1400
    assert config.server == "[::1]:1400"
    assert config.authmethod == "pam"
    assert config.pam_service == "nicos"
    assert config.pam_defaultlevel == 10
    assert config.trustedhosts == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert config.maxlogins == 3
    assert config.reuseaddress is False
    assert config.updateinterval == 1.0 and isinstance(config.updateinterval, float)
    assert config.datadir == tmp_path / "var" / "data"
    assert config.logdir == Path("/var/log/nicos")
    assert config.setup == "tas_main"
    assert config.rsakey == tmp_path / "keys" / "daemon.pem"
    assert config.max_command_bytes == 2048
    assert config.login_timeout == 2.5
    assert config.event_queue_limit == 77
    assert config.throttle_failures == 9
    assert config.throttle_window == 30.5
    assert config.allow_insecure is True
    assert config.allow_weak_passwords is True
    assert config.autosimulate is True
    assert config.tls_certfile == tmp_path / "tls" / "daemon.crt"
    assert config.tls_keyfile == Path("/etc/nicos/daemon.key")
    assert config.tls_cafile == tmp_path / "tls" / "clients-ca.pem"
    assert config.tls_require_client_cert is True
    assert config.tls is True
    assert {name: (e.hash, e.level) for name, e in config.passwd.items()} == {
        "alice": (HASH, 20), "bob": (HASH, 10),
    }


def test_every_documented_key_is_covered_by_the_test_above():
    top_level = {line.split("=")[0].strip() for line in EVERY_KEY.splitlines()
                 if "=" in line and not line.startswith("[") and line[0] != " "}
    top_level -= {"hash", "level"}
    assert top_level | {"passwd"} == set(CONFIG_KEYS)


def test_every_key_is_documented():
    doc = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [key for key in CONFIG_KEYS if f"`{key}`" not in doc]
    assert missing == []


def test_demo_config_loads_with_its_users():
    config = load_config(REPO / "etc" / "demo.toml")
    assert config.address == ("127.0.0.1", 1301)
    assert config.authmethod == "list"
    assert {name: e.level for name, e in config.passwd.items()} == {
        "admin": 20, "user": 10, "guest": 0,
    }
    assert config.datadir == REPO / "data"
    assert config.logdir == REPO / "log"
    assert config.setup == "demo"


def test_overrides_win_and_resolve_paths_against_cwd(tmp_path, monkeypatch):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    path = write(tmp_path, 'server = "127.0.0.1:1400"\ndatadir = "d"\n')
    config = load_config(path, {"server": "127.0.0.1:0", "logdir": "l"})
    assert config.port == 0
    assert config.datadir == tmp_path / "d"
    assert config.logdir == workdir / "l"


def test_home_directory_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_config(write(tmp_path, 'datadir = "~/nicosdata"\n'))
    assert config.datadir == tmp_path / "nicosdata"


@pytest.mark.parametrize("server, host, port", [
    ("example.org", "example.org", 1301),
    ("localhost:1302", "localhost", 1302),
    ("0.0.0.0:0", "0.0.0.0", 0),
    ("[::1]", "::1", 1301),
    ("[fe80::1]:65535", "fe80::1", 65535),
])
def test_server_forms(tmp_path, server, host, port):
    config = load_config(write(tmp_path, f'server = "{server}"\n'))
    assert config.address == (host, port)


@pytest.mark.parametrize("server, fragment", [
    ("::1", "brackets"),
    ("host:", "no port"),
    (":1301", "host is empty"),
    ("host:65536", "0 to 65535"),
    ("host:http", "0 to 65535"),
    ("[nothex]:1", "IPv6"),
    ("bad host", "not a valid host"),
])
def test_bad_server_values(tmp_path, server, fragment):
    path = write(tmp_path, f'server = "{server}"\n')
    with pytest.raises(ConfigError, match=fragment) as info:
        load_config(path)
    assert "'server'" in str(info.value) and str(path) in str(info.value)


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, 'sever = "127.0.0.1"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "'sever'" in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_override_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"overrides: unknown key 'portt'"):
        load_config(None, {"portt": 1})


@pytest.mark.parametrize("line, key, expected", [
    ('maxlogins = "10"', "maxlogins", "an integer"),
    ("maxlogins = true", "maxlogins", "an integer"),
    ("maxlogins = 1.5", "maxlogins", "an integer"),
    ("reuseaddress = 1", "reuseaddress", "true or false"),
    ('updateinterval = "fast"', "updateinterval", "a number"),
    ("throttle_window = false", "throttle_window", "a number"),
    ("server = 1301", "server", "a string"),
    ("datadir = 5", "datadir", "a string"),
    ('trustedhosts = "10.0.0.0/8"', "trustedhosts", "a list"),
    ("trustedhosts = [10]", "trustedhosts", "a list of strings"),
    ('passwd = "alice"', "passwd", "a table"),
    ("setup = []", "setup", "a string"),
])
def test_wrong_types_name_key_expected_type_and_file(tmp_path, line, key, expected):
    path = write(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"'{key}'" in message
    assert f"expected {expected}" in message
    assert str(path) in message


@pytest.mark.parametrize("line, key", [
    ("maxlogins = 0", "maxlogins"),
    ("updateinterval = 0", "updateinterval"),
    ("updateinterval = nan", "updateinterval"),
    ("login_timeout = inf", "login_timeout"),
    ("max_command_bytes = 10", "max_command_bytes"),
    ("event_queue_limit = -1", "event_queue_limit"),
    ("throttle_failures = 0", "throttle_failures"),
    ('authmethod = "ldap"', "authmethod"),
    ('pam_defaultlevel = "root"', "pam_defaultlevel"),
    ('pam_defaultlevel = 15', "pam_defaultlevel"),
    ('pam_service = "../etc/passwd"', "pam_service"),
    ('setup = "../evil"', "setup"),
    ('setup = ""', "setup"),
    ('rsakey = ""', "rsakey"),
])
def test_values_out_of_range(tmp_path, line, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(write(tmp_path, line + "\n"))


@pytest.mark.parametrize("server", ["0.0.0.0", "192.168.1.10:1301", "example.org", "[::]"])
def test_authmethod_none_refused_off_loopback(tmp_path, server):
    path = write(tmp_path, f'server = "{server}"\nauthmethod = "none"\n')
    with pytest.raises(ConfigError, match="loopback") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_authmethod_none_allowed_off_loopback_only_with_allow_insecure(tmp_path):
    path = write(tmp_path, 'server = "0.0.0.0"\nauthmethod = "none"\nallow_insecure = true\n')
    assert load_config(path).authmethod == "none"


@pytest.mark.parametrize("server", ["127.0.0.1", "127.0.0.2:1400", "localhost", "[::1]:1"])
def test_authmethod_none_allowed_on_loopback(tmp_path, server):
    path = write(tmp_path, f'server = "{server}"\nauthmethod = "none"\n')
    assert load_config(path).authmethod == "none"


def test_override_cannot_sneak_none_onto_public_address(tmp_path):
    path = write(tmp_path, 'authmethod = "none"\n')
    with pytest.raises(ConfigError, match="loopback"):
        load_config(path, {"server": "0.0.0.0:1301"})


def test_user_with_empty_hash_is_refused(tmp_path):
    path = write(tmp_path, '[passwd.alice]\nhash = ""\nlevel = "admin"\n')
    with pytest.raises(ConfigError, match="empty") as info:
        load_config(path)
    assert "passwd.alice.hash" in str(info.value)


def test_user_with_unsalted_legacy_hash_is_refused_without_echoing_it(tmp_path):
    legacy = "5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8"  # sha1("password"), upstream style
    path = write(tmp_path, f'[passwd.alice]\nhash = "{legacy}"\nlevel = "user"\n')
    with pytest.raises(ConfigError, match="passwd.alice.hash") as info:
        load_config(path)
    assert legacy not in str(info.value)


@pytest.mark.parametrize("entry, fragment", [
    (f'hash = "{HASH}"', "missing 'level'"),
    ('level = "user"', "missing 'hash'"),
    (f'hash = "{HASH}"\nlevel = "superuser"', "invalid user level"),
    (f'hash = "{HASH}"\nlevel = true', "invalid user level"),
    (f'hash = "{HASH}"\nlevel = "user"\npassword = "x"', "unknown key"),
    ("hash = 5\nlevel = 'user'", "expected a string"),
])
def test_bad_user_entries(tmp_path, entry, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(write(tmp_path, f"[passwd.alice]\n{entry}\n"))


@pytest.mark.parametrize("name", ['" alice"', '""', '"a\\tb"', '"' + "x" * 65 + '"'])
def test_bad_user_names(tmp_path, name):
    with pytest.raises(ConfigError, match="user name"):
        load_config(write(tmp_path, f'[passwd.{name}]\nhash = "{HASH}"\nlevel = "user"\n'))


def test_weak_password_is_not_the_config_loaders_business(tmp_path):
    # The loader sees only hashes; strength is judged when the hash is made.
    weak_hash = hash_password("abc")
    config = load_config(write(tmp_path, f'[passwd.al]\nhash = "{weak_hash}"\nlevel = 0\n'))
    assert config.passwd["al"].level == 0
    assert password_problem("abc") is not None


def test_hashes_stay_out_of_repr(tmp_path):
    config = load_config(write(tmp_path, f'[passwd.alice]\nhash = "{HASH}"\nlevel = "user"\n'))
    assert HASH.split("$")[-1] not in repr(config)


def test_config_is_immutable():
    config = load_config(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.passwd["mallory"] = None  # type: ignore[index]


@pytest.mark.parametrize("entry", ["instrument.example.org", "10.0.0.1/8", "300.1.1.1"])
def test_trustedhosts_accepts_only_addresses_and_exact_networks(tmp_path, entry):
    with pytest.raises(ConfigError, match="trustedhosts"):
        load_config(write(tmp_path, f'trustedhosts = ["{entry}"]\n'))


@pytest.mark.parametrize("peer, trusted", [
    ("10.1.2.3", True),
    ("10.2.0.1", False),
    ("192.0.2.7", True),
    ("192.0.2.8", False),
    ("::ffff:10.1.2.3", True),
    ("fd00::5", True),
    ("fe80::1", False),
    ("not-an-ip", False),
])
def test_is_trusted(tmp_path, peer, trusted):
    path = write(tmp_path, 'trustedhosts = ["10.1.0.0/16", "192.0.2.7", "fd00::/8"]\n')
    assert load_config(path).is_trusted(peer) is trusted


def test_empty_trustedhosts_trusts_everyone():
    assert DaemonConfig().is_trusted("203.0.113.9")


def test_invalid_toml_names_file(tmp_path):
    path = write(tmp_path, "server = \n")
    with pytest.raises(ConfigError, match="invalid TOML") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


# The files named by tls_* keys are loaded at start-up (test_tls_setup.py), not here.
@pytest.mark.parametrize("text, fragment", [
    ('tls_certfile = "a.crt"\n', "'tls_certfile' is set but 'tls_keyfile' is not"),
    ('tls_keyfile = "a.key"\n', "'tls_keyfile' is set but 'tls_certfile' is not"),
    ('tls_certfile = "a.crt"\ntls_keyfile = "a.key"\ntls_require_client_cert = true\n',
     "'tls_require_client_cert' needs 'tls_cafile'"),
    ('tls_certfile = "a.crt"\ntls_keyfile = "a.key"\ntls_cafile = "ca.pem"\n',
     "'tls_cafile' is only used with tls_require_client_cert"),
    ('tls_cafile = "ca.pem"\ntls_require_client_cert = true\n',
     "'tls_require_client_cert' needs TLS"),
    ('tls_certfile = ""\ntls_keyfile = "a.key"\n', "'tls_certfile'"),
    ("tls_require_client_cert = 1\n", "expected true or false"),
])
def test_inconsistent_tls_keys_are_refused(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_tls_keys_resolve_like_other_paths(tmp_path):
    config = load_config(write(tmp_path, 'tls_certfile = "tls/both.pem"\n'
                                         'tls_keyfile = "tls/both.pem"\n'))
    assert config.tls
    assert config.tls_certfile == config.tls_keyfile == tmp_path / "tls" / "both.pem"
