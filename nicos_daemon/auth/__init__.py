"""Login checking: password hashes, the RSA login key, back-ends and the throttle."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import INVALID_CREDENTIALS, Authenticator, AuthError, AuthResult

if TYPE_CHECKING:  # config imports auth.levels, so a runtime import would be circular
    from nicos_daemon.config import DaemonConfig

__all__ = ["INVALID_CREDENTIALS", "AuthError", "AuthResult", "Authenticator",
           "make_authenticator"]


def make_authenticator(config: DaemonConfig) -> Authenticator:
    """The back-end selected by ``config.authmethod``."""
    if config.authmethod == "list":
        from .listauth import ListAuthenticator
        return ListAuthenticator(
            {name: (entry.hash, entry.level) for name, entry in config.passwd.items()}
        )
    if config.authmethod == "pam":
        from .pamauth import PamAuthenticator
        return PamAuthenticator(config.pam_service, config.pam_defaultlevel)
    if config.authmethod == "none":
        from .noauth import NoAuthenticator
        return NoAuthenticator()
    raise ValueError(f"unknown authmethod {config.authmethod!r}")
