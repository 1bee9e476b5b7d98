"""Authentication against a fixed list of users with scrypt password hashes."""

import logging
import secrets
from collections.abc import Mapping

from .base import INVALID_CREDENTIALS, MAX_PASSWORD_CHARS, AuthError, AuthResult
from .levels import level_name
from .passwords import hash_password, verify_password

log = logging.getLogger("nicos_daemon.auth.list")


class ListAuthenticator:
    """Users and their (hash, level) from the configuration; exact user names only."""

    def __init__(self, users: Mapping[str, tuple[str, int]]) -> None:
        self._users = dict(users)
        # Unknown users are checked against this hash so that they cost as much time as
        # known users; otherwise response time would reveal which user names exist.
        self._dummy_hash = hash_password(secrets.token_urlsafe(24))
        if not self._users:
            log.warning("the user list is empty: every login will be refused")

    def authenticate(self, login: str, password: str) -> AuthResult:
        # Values come from decoded client JSON; anything but strings is a failed login.
        if not isinstance(login, str) or not isinstance(password, str):
            raise AuthError(INVALID_CREDENTIALS)
        entry = self._users.get(login)
        stored = entry[0] if entry is not None else self._dummy_hash
        if len(password) > MAX_PASSWORD_CHARS:
            matches = False
        elif not stored:
            # A user without a password (the configuration allowed it explicitly):
            # only the empty password fits, unlike upstream, where an empty stored
            # hash accepts any password.
            matches = password == ""
        else:
            matches = verify_password(password, stored)
        if entry is None or not matches:
            log.info("login refused for %r: %s", login,
                     "unknown user" if entry is None else "wrong password")
            raise AuthError(INVALID_CREDENTIALS)
        level = entry[1]
        log.info("user %r authenticated by list, level %s", login, level_name(level))
        return AuthResult(user=login, level=level)
