"""Types shared by all authentication back-ends."""

from dataclasses import dataclass
from typing import Protocol

# One message for every credential failure, so that a client cannot tell an unknown
# user from a wrong password, nor learn anything from back-end errors (§11.5, §11.6).
INVALID_CREDENTIALS = "Invalid username or password!"

# Passwords arrive RSA-encrypted and are therefore already short (key bytes - 11);
# the cap protects back-ends that could be reached without that limit.
MAX_PASSWORD_CHARS = 1024


class AuthError(Exception):
    """Login refused; ``str(error)`` is the text that may be shown to the client."""


@dataclass(frozen=True)
class AuthResult:
    user: str
    level: int


class Authenticator(Protocol):
    def authenticate(self, login: str, password: str) -> AuthResult:
        """Return the user's identity and level, or raise AuthError."""
        ...
