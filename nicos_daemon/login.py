"""The login handshake without the sockets: banner contents and the ``authenticate`` check.

The server reads the frames and sends the replies; this module decides. Every refusal
is a LoginRefused whose text goes to the client in a NAK, after which the server closes
the connection.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from nicos.protocols.daemon import PROTO_VERSION, PURPOSE_EMERGENCY, PURPOSE_KEY, command2code
from nicos.protocols.daemon.codec import CodecError, decode

from .auth import INVALID_CREDENTIALS, Authenticator, AuthError
from .auth.levels import level_name
from .auth.rsakeys import ServerKey
from .auth.throttle import LoginThrottle
from .common import User

log = logging.getLogger("nicos_daemon.login")

AUTHENTICATE = command2code["authenticate"]
# An authenticate command is a few hundred bytes; nothing bigger is read before login.
MAX_HANDSHAKE_PAYLOAD = 64 * 1024
MAX_LOGIN_CHARS = 256

NO_USERNAME = "No username, please identify yourself!"
INVALID_REQUEST = "invalid credentials"


class LoginRefused(Exception):
    """The login fails; ``str(error)`` is the NAK text for the client."""


def make_banner(server_key: ServerKey, version: str) -> dict[str, Any]:
    """The unprompted first reply; it names no paths and no facility version (§11.8)."""
    return {
        "daemon_version": version,
        "protocol_version": PROTO_VERSION,
        # The upstream client encrypts only when the value starts with "rsa,"; the
        # fallback after the comma is never honoured here: plain passwords are refused.
        "pw_hashing": "rsa,plain",
        "rsakey": server_key.banner_value(),
        "serializer": "json",
        "nicos_root": "",
        "custom_path": "",
        "custom_version": "",
    }


class Gatekeeper:
    """Checks ``authenticate`` commands: shape, throttle, decryption, back-end."""

    def __init__(self, authenticator: Authenticator, server_key: ServerKey,
                 throttle: LoginThrottle) -> None:
        self.authenticator = authenticator
        self.server_key = server_key
        self.throttle = throttle

    def login(self, peer: str, code: int, payload: bytes) -> User:
        """Return the logged-in user or raise LoginRefused."""
        if code != AUTHENTICATE:
            log.info("login from %s refused: first command is 0x%04x, not authenticate",
                     peer, code)
            raise LoginRefused(INVALID_REQUEST)
        login, passwd, emergency_only = self._credentials(peer, payload)
        wait = self.throttle.check(peer)
        if wait > 0:
            log.warning("login as %r from %s refused: throttled for %.0f s", login, peer, wait)
            raise LoginRefused(f"too many failed logins, try again in {math.ceil(wait)} s")
        if not login:
            log.info("login from %s refused: empty user name", peer)
            raise LoginRefused(NO_USERNAME)
        try:
            password = self.server_key.decrypt_password(passwd)
        except AuthError as err:
            # Same answer as a wrong password: the client learns nothing about the key.
            self.throttle.record_failure(peer)
            log.warning("login as %r from %s failed: %s", login, peer, err)
            raise LoginRefused(INVALID_CREDENTIALS) from None
        try:
            result = self.authenticator.authenticate(login, password)
        except AuthError as err:
            self.throttle.record_failure(peer)
            log.warning("login as %r from %s failed: %s", login, peer, err)
            raise LoginRefused(str(err) or INVALID_CREDENTIALS) from None
        except Exception:
            # A broken back-end must not look like a wrong password to the throttle.
            log.exception("login as %r from %s: authentication back-end failed", login, peer)
            raise LoginRefused("login failed: internal error in the authentication "
                               "back-end") from None
        self.throttle.record_success(peer)
        log.debug("credentials of %s (%s) from %s accepted", result.user,
                  level_name(result.level), peer)
        return User(name=result.user, level=result.level, emergency_only=emergency_only)

    @staticmethod
    def _credentials(peer: str, payload: bytes) -> tuple[str, str, bool]:
        try:
            args = decode(payload)
        except CodecError as err:
            log.info("login from %s refused: undecodable authenticate: %s", peer, err)
            raise LoginRefused(INVALID_REQUEST) from None
        if not (isinstance(args, list) and len(args) == 1 and isinstance(args[0], dict)):
            log.info("login from %s refused: authenticate needs exactly one dict", peer)
            raise LoginRefused(INVALID_REQUEST)
        login = args[0].get("login")
        passwd = args[0].get("passwd")
        if not isinstance(login, str) or not isinstance(passwd, str) or \
                len(login) > MAX_LOGIN_CHARS:
            log.info("login from %s refused: malformed login or passwd", peer)
            raise LoginRefused(INVALID_REQUEST)
        # Our clients' emergency connections say so (upstream daemons ignore the key).
        emergency_only = args[0].get(PURPOSE_KEY) == PURPOSE_EMERGENCY
        return login.strip(), passwd, emergency_only
