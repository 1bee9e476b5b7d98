"""The list and none back-ends and the factory that picks one from the config."""

from pathlib import Path

import pytest

from nicos_daemon.auth import AuthError, AuthResult, listauth, make_authenticator
from nicos_daemon.auth.listauth import ListAuthenticator
from nicos_daemon.auth.noauth import NoAuthenticator
from nicos_daemon.auth.pamauth import PamAuthenticator
from nicos_daemon.auth.passwords import hash_password
from nicos_daemon.config import load_config

REPO = Path(__file__).resolve().parents[2]
ALICE_PW = "alice-Secret-1"
BOB_PW = "bob-Secret-2"


@pytest.fixture(scope="module")
def users():
    return {"alice": (hash_password(ALICE_PW), 20), "bob": (hash_password(BOB_PW), 0)}


@pytest.fixture(scope="module")
def authenticator(users):
    return ListAuthenticator(users)


def test_list_success(authenticator):
    assert authenticator.authenticate("alice", ALICE_PW) == AuthResult("alice", 20)
    assert authenticator.authenticate("bob", BOB_PW) == AuthResult("bob", 0)


@pytest.mark.parametrize("login, password", [
    ("alice", BOB_PW),
    ("alice", ""),
    ("alice", ALICE_PW + "x"),
    ("Alice", ALICE_PW),
    ("alice ", ALICE_PW),
    ("mallory", ALICE_PW),
    ("", ""),
    ("alice", "x" * 5000),
    (["alice"], ALICE_PW),
    ("alice", None),
])
def test_list_failures_all_give_the_same_message(authenticator, login, password):
    with pytest.raises(AuthError) as info:
        authenticator.authenticate(login, password)
    assert str(info.value) == "Invalid username or password!"


def test_unknown_user_costs_one_full_hash_check(users, monkeypatch):
    checked = []
    real_verify = listauth.verify_password

    def spy(password, stored):
        checked.append(stored)
        return real_verify(password, stored)

    authenticator = ListAuthenticator(users)
    monkeypatch.setattr(listauth, "verify_password", spy)
    with pytest.raises(AuthError):
        authenticator.authenticate("mallory", "whatever")
    with pytest.raises(AuthError):
        authenticator.authenticate("alice", "whatever")
    dummy, real = checked
    # Same scheme and cost parameters as a real entry, so the time spent is the same.
    assert dummy.split("$")[:2] == real.split("$")[:2]
    assert dummy not in {entry[0] for entry in users.values()}


def test_empty_user_list_refuses_everyone():
    with pytest.raises(AuthError, match="Invalid username or password!"):
        ListAuthenticator({}).authenticate("admin", "")


def test_no_authentication_accepts_anything_as_admin():
    assert NoAuthenticator().authenticate("anyone", "") == AuthResult("anyone", 20)


def test_factory_builds_list_authenticator_from_demo_config():
    config = load_config(REPO / "etc" / "demo.toml")
    authenticator = make_authenticator(config)
    assert isinstance(authenticator, ListAuthenticator)
    # The passwords documented in docs/configuration.md must match the demo hashes.
    assert authenticator.authenticate("admin", "nicos-demo-admin").level == 20
    assert authenticator.authenticate("user", "nicos-demo-user").level == 10
    assert authenticator.authenticate("guest", "nicos-demo-guest").level == 0
    with pytest.raises(AuthError):
        authenticator.authenticate("admin", "nicos-demo-user")


def test_factory_builds_pam_and_none():
    pam_config = load_config(None, {"authmethod": "pam", "pam_service": "nicos",
                                    "pam_defaultlevel": "user"})
    pam_auth = make_authenticator(pam_config)
    assert isinstance(pam_auth, PamAuthenticator)
    assert (pam_auth.service, pam_auth.defaultlevel) == ("nicos", 10)
    none_config = load_config(None, {"authmethod": "none"})
    assert isinstance(make_authenticator(none_config), NoAuthenticator)
