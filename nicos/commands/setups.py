"""User commands for setups: NewSetup, AddSetup, RemoveSetup, ListSetups."""

from __future__ import annotations

import logging

from nicos.commands.arguments import info_of, name_arguments
from nicos.core import ConfigurationError, Session, usercommand

user_log = logging.getLogger("nicos")


def _report(session: Session) -> None:
    included = [s for s in session.loaded_setups if s not in session.explicit_setups]
    text = ", ".join(session.explicit_setups) or "none"
    if included:
        text += f" (including {', '.join(included)})"
    user_log.info("loaded setups: %s", text)


@usercommand(example="NewSetup('demo')")
def NewSetup(session: Session, *setups: str) -> None:
    """Load these setups instead of the current ones (all devices anew).

    ``NewSetup()`` without names reloads the current setups, e.g. after
    editing a setup file.
    """
    names = name_arguments(info_of(NewSetup), setups)
    if names:
        session.load_setup(*names, replace=True)
    else:
        session.reload_setups()
    _report(session)


@usercommand(needs="the names of setups", example="AddSetup('cryo')")
def AddSetup(session: Session, *setups: str) -> None:
    """Load more setups; devices already loaded stay as they are."""
    info = info_of(AddSetup)
    if not setups:
        raise info.usage_error()
    session.load_setup(*name_arguments(info, setups))
    _report(session)


@usercommand(needs="the names of setups", example="RemoveSetup('cryo')")
def RemoveSetup(session: Session, *setups: str) -> None:
    """Unload setups and their devices."""
    info = info_of(RemoveSetup)
    if not setups:
        raise info.usage_error()
    session.unload_setup(*name_arguments(info, setups))
    _report(session)


@usercommand
def ListSetups(session: Session) -> None:
    """List the setups that can be loaded; loaded ones are marked."""
    lines = []
    for name, info in session.available_setups():
        mark = "*" if name in session.explicit_setups else \
            "+" if name in session.loaded_setups else " "
        if isinstance(info, ConfigurationError):
            lines.append(f"{mark} {name:<16} {'(broken)':<10} {info}")
        else:
            lines.append(f"{mark} {name:<16} {info.group:<10} {info.description}")
    user_log.info("Setups (* loaded, + included):\n%s", "\n".join(lines) or "none found")


__all__ = ["AddSetup", "ListSetups", "NewSetup", "RemoveSetup"]
