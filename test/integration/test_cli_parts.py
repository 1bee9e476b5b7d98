"""The parts of ``nicos-client`` that need no daemon: addresses, profiles, input
handling, rendering, exit status.  (The program itself is tested in test_cli.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from nicos.clients.cli import batch, main, profiles, render
from nicos.clients.cli.interactive import needs_more_input, prepare_code
from nicos.clients.cli.session import Outcome
from nicos.protocols.daemon import ERROR, INFO, INPUT, WARNING


@pytest.fixture()
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("NICOS_PASSWORD", raising=False)
    return tmp_path


def write_profiles(xdg: Path, text: str) -> None:
    directory = xdg / "config" / "nicos-client"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "profiles.toml").write_text(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("host", (None, "host", None)),
    ("alice@host:1234", ("alice", "host", 1234)),
    ("[::1]:1301", (None, "::1", 1301)),
    ("bob@[fe80::1]", ("bob", "fe80::1", None)),
    ("a@b@host", ("a@b", "host", None)),
])
def test_parse_address(text: str, expected: tuple) -> None:
    assert profiles.parse_address(text) == expected


@pytest.mark.parametrize("text", ["host:abc", ":1301", "@host", "host:0", "[::1", "x@"])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(profiles.ProfileError):
        profiles.parse_address(text)


def test_profiles_resolve_with_overrides(xdg: Path) -> None:
    write_profiles(xdg, 'default = "tas"\n'
                        '[profiles.tas]\nhost = "tas.example.org"\nport = 1400\nuser = "op"\n'
                        'viewonly = true\n')
    known = profiles.load_profiles()
    target = profiles.resolve_target(None, known)
    assert (target.host, target.port, target.user, target.viewonly) == \
        ("tas.example.org", 1400, "op", True)
    target = profiles.resolve_target("guest@tas:1500", known)
    assert (target.host, target.port, target.user) == ("tas.example.org", 1500, "guest")
    target = profiles.resolve_target("other", known)
    assert (target.host, target.port, target.user, target.profile) == \
        ("other", 1301, None, None)


@pytest.mark.parametrize(("text", "message"), [
    ('[profiles.x]\nhost = "h"\npassword = "p"\n', "passwords are never stored"),
    ('[profiles.x]\nhost = "h"\nprot = 1\n', "unknown key 'prot'"),
    ('[profiles.x]\nhost = "h"\nport = "1301"\n', "port must be a int"),
    ('[profiles.x]\nport = 1301\n', '"host" is required'),
    ('default = "y"\n[profiles.x]\nhost = "h"\n', "names no [profiles.*] table"),
    ('host = "h"\n', "unknown key(s) host"),
    ('[profiles.x\n', "invalid TOML"),
])
def test_profiles_refused(xdg: Path, text: str, message: str) -> None:
    write_profiles(xdg, text)
    with pytest.raises(profiles.ProfileError, match=None) as info:
        profiles.load_profiles()
    assert message in str(info.value)


def test_no_target_without_default(xdg: Path) -> None:
    with pytest.raises(profiles.ProfileError, match="no host given"):
        profiles.resolve_target(None, profiles.load_profiles())


def test_history_file_is_private(xdg: Path) -> None:
    path = profiles.history_path()
    assert path == xdg / "state" / "nicos-client" / "history"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("argv", [
    ["host", "bogus"],
    ["host", "--wait"],
    ["host", "-c", "1", "run", "file.py"],
    ["host", "run", "/nonexistent/file.py"],
])
def test_usage_errors_exit_2(xdg: Path, argv: list[str],
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(argv) == batch.EXIT_USAGE
    assert "nicos-client:" in capsys.readouterr().err


def test_password_from_environment_is_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NICOS_PASSWORD", "s3cret")
    assert main.get_password("u", "h:1") == "s3cret"
    import os
    assert "NICOS_PASSWORD" not in os.environ  # editors started later do not see it


@pytest.mark.parametrize(("text", "more"), [
    ("x = 1", False),
    ("for i in range(3):", True),
    ("for i in range(3):\n    print(i)", True),
    ("for i in range(3):\n    print(i)\n", False),
    ("foo(1,", True),
    ("x = = 1", False),  # the daemon reports the syntax error
    ("/help", False),
    ("", False),
])
def test_needs_more_input(text: str, more: bool) -> None:
    assert needs_more_input(text) is more


def test_prepare_code() -> None:
    assert prepare_code("  1 + 1  ") == "1 + 1"
    assert prepare_code("for i in x:\n    f(i)\n\n") == "for i in x:\n    f(i)\n"


def test_render_marks_levels_and_strips_control_sequences() -> None:
    plain = render.Painter(False)
    record = ["nicos", 0.0, WARNING, "careful\n", None, None]
    assert render.format_record(record, plain) == "WARNING: careful"
    record = ["nicos", 0.0, ERROR, "bad\n", "Traceback\n  line\n", None]
    assert render.format_record(record, plain) == "ERROR: bad\n    Traceback\n      line"
    record = ["motor", 0.0, INFO, "\x1b]0;owned\x07moved\n", None, None]
    assert render.format_record(record, plain) == "motor: ^[]0;owned^Gmoved"
    record = ["nicos", 0.0, INPUT, ">>> x\n", None, None]
    assert render.format_record(record, render.Painter(True)) == "\x1b[34m>>> x\x1b[0m"
    assert render.format_record(["nicos", 0.0, 10, "debug\n", None, None], plain) is None


@pytest.mark.parametrize(("outcome", "status"), [
    (Outcome("r", True), batch.EXIT_OK),
    (Outcome("r", False, error="boom"), batch.EXIT_FAILED),
    (Outcome("r", False, stopped=True), batch.EXIT_STOPPED),
    (Outcome("r", False, stopped=True, blocked=True), batch.EXIT_STOPPED),
    (None, batch.EXIT_CONNECTION),
])
def test_exit_status(outcome: Outcome | None, status: int) -> None:
    assert batch.exit_status(outcome) == status
