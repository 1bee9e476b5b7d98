"""Authentication of system accounts through PAM (python-pam).

The level comes from an ``access=<0|10|20>`` token in the *first* GECOS field (the
full name). Other GECOS fields (room, phones) can often be changed by the users
themselves with ``chfn`` (Debian's default CHFN_RESTRICT is "rwh"), which would let
anybody grant themselves admin; the full name is changeable by root only.

PAM calls block (pam_unix adds a delay of about 2 s after a failure), so callers must
run them off the accept path.
"""

import logging
import pwd
import re

from .base import INVALID_CREDENTIALS, MAX_PASSWORD_CHARS, AuthError, AuthResult
from .levels import NAME_BY_LEVEL, level_name

log = logging.getLogger("nicos_daemon.auth.pam")

_MAX_LOGIN_CHARS = 256
_ACCESS_TOKEN = re.compile(r"(?:^|\s)access=(\d{1,3})(?=\s|$)")


def level_from_gecos(gecos: str, defaultlevel: int) -> int:
    """Level from ``access=<n>`` in the first GECOS field, else ``defaultlevel``."""
    full_name = gecos.split(",", 1)[0]
    match = _ACCESS_TOKEN.search(full_name)
    if match is None:
        return defaultlevel
    level = int(match.group(1))
    if level not in NAME_BY_LEVEL:
        log.warning("ignoring invalid access=%d in GECOS %r", level, full_name)
        return defaultlevel
    return level


class PamAuthenticator:
    def __init__(self, service: str, defaultlevel: int) -> None:
        try:
            import pam
        except ImportError as err:
            raise ImportError(
                "authmethod 'pam' needs the python-pam package (install the 'pam' extra)"
            ) from err
        self._pam = pam
        self.service = service
        self.defaultlevel = defaultlevel

    def authenticate(self, login: str, password: str) -> AuthResult:
        if not isinstance(login, str) or not isinstance(password, str):
            raise AuthError(INVALID_CREDENTIALS)
        if (not login or len(login) > _MAX_LOGIN_CHARS
                or len(password) > MAX_PASSWORD_CHARS):
            log.info("PAM login refused for %r: login or password length out of range",
                     login[:_MAX_LOGIN_CHARS])
            raise AuthError(INVALID_CREDENTIALS)
        # One handle per call: a python-pam object must not be shared between threads.
        handle = self._pam.pam()
        try:
            accepted = handle.authenticate(login, password, service=self.service)
        except ValueError as err:  # NUL bytes in user name or password
            log.info("PAM login refused for %r: %s", login, err)
            raise AuthError(INVALID_CREDENTIALS) from None
        if not accepted:
            # The PAM reason goes to our log only; clients learn nothing from it (§11.6).
            log.info("PAM login refused for %r (service %r): %s (code %s)",
                     login, self.service, handle.reason, handle.code)
            raise AuthError(INVALID_CREDENTIALS)
        level = self._level_of(login)
        log.info("user %r authenticated by PAM, level %s", login, level_name(level))
        return AuthResult(user=login, level=level)

    def _level_of(self, login: str) -> int:
        try:
            gecos = pwd.getpwnam(login).pw_gecos
        except KeyError:
            # PAM may know accounts that NSS does not list (e.g. some PAM-only back-ends).
            return self.defaultlevel
        return level_from_gecos(gecos, self.defaultlevel)
