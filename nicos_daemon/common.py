"""Small types shared by the daemon's rooms (server, handler, controller)."""

from __future__ import annotations

from dataclasses import dataclass


class CommandError(Exception):
    """A command cannot be honoured; the message is sent to the client in a NAK."""


@dataclass(frozen=True)
class User:
    """A logged-in user as the controller sees it."""

    name: str
    level: int
    # A login made only to send an emergency stop (its client said so): it may use
    # a reserved slot beyond maxlogins and may send nothing else.
    emergency_only: bool = False
