"""Control arbitration: who may steer the session (protocol reference §6.2).

One login name at a time holds control. A caller may use a control command when
nobody holds control (a non-admin caller then becomes the holder), when the holder's
level is not above the caller's, or when the caller is an admin (who is never refused
and does not take control this way). ``queue`` and ``start`` pass the same check and
then take control (upstream takes it without any check), so a script started by an
admin keeps users out until an admin or the holder unlocks.
"""

from __future__ import annotations

import logging
import threading

from nicos.protocols.daemon import ADMIN

from .common import CommandError, User

log = logging.getLogger("nicos_daemon.access")


def no_control_message(holder: User) -> str:
    return f"you do not have control of the session (held by {holder.name})"


class ControlArbiter:
    """Thread-safe holder of the session control; shared by all connections."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: User | None = None

    @property
    def holder(self) -> User | None:
        return self._holder

    def check(self, user: User) -> None:
        """Allow ``user`` a control command or raise CommandError naming the holder.

        A non-admin caller becomes the holder when nobody holds control.
        """
        if user.level >= ADMIN:
            return  # admins are never refused and take control only with a script
        with self._lock:
            holder = self._holder
            if holder is not None and holder.level > user.level:
                raise CommandError(no_control_message(holder))
            if holder is None:
                self._holder = user
        if holder is None:
            log.info("%s (level %d) now has control", user.name, user.level)

    def take(self, user: User) -> None:
        """Make ``user`` the holder; after a script was queued or started (the check
        came before)."""
        with self._lock:
            previous, self._holder = self._holder, user
        if previous != user:
            log.info("%s (level %d) now has control", user.name, user.level)

    def unlock(self, user: User) -> None:
        """Release control; only an admin or the holder may do that."""
        with self._lock:
            holder = self._holder
            if holder is None:
                return
            if user.level < ADMIN and holder.name != user.name:
                raise CommandError(no_control_message(holder))
            self._holder = None
        log.info("%s released control held by %s", user.name, holder.name)

    def release_if_holder(self, user: User) -> None:
        """Release control if ``user`` (by login name) holds it; used on ``quit``."""
        with self._lock:
            if self._holder is None or self._holder.name != user.name:
                return
            self._holder = None
        log.info("%s quit and released control", user.name)
