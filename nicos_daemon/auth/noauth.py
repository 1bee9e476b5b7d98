"""No authentication: every login is accepted as ADMIN.

Only for single-user test setups; the configuration refuses it on any address other
than loopback unless ``allow_insecure`` is set.
"""

import logging

from .base import AuthResult
from .levels import ADMIN

log = logging.getLogger("nicos_daemon.auth.none")


class NoAuthenticator:
    def __init__(self) -> None:
        log.warning("authentication is disabled: every client is accepted as admin")

    def authenticate(self, login: str, password: str) -> AuthResult:
        log.info("user %r accepted without authentication, level admin", login)
        return AuthResult(user=login, level=ADMIN)
