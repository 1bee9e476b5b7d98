"""User levels as the configuration spells them (protocol reference §8.3).

The numeric values are wire facts and come from the protocol package; this module adds
the strict parsing used for configuration files.
"""

from nicos.protocols.daemon import ADMIN, GUEST, USER

__all__ = ["ADMIN", "GUEST", "USER", "LEVEL_BY_NAME", "NAME_BY_LEVEL", "level_name",
           "parse_level"]

NAME_BY_LEVEL: dict[int, str] = {GUEST: "guest", USER: "user", ADMIN: "admin"}
LEVEL_BY_NAME: dict[str, int] = {name: level for level, name in NAME_BY_LEVEL.items()}


def parse_level(value: object) -> int:
    """Turn a configured level (``"guest"``/``"user"``/``"admin"`` or 0/10/20) into an int.

    Raises ValueError for anything else, so that a typo never silently grants a level.
    """
    # bool is an int subclass; "true" must not become level 1
    if isinstance(value, bool):
        raise ValueError(f"invalid user level {value!r}")
    if isinstance(value, str) and value in LEVEL_BY_NAME:
        return LEVEL_BY_NAME[value]
    if isinstance(value, int) and value in NAME_BY_LEVEL:
        return value
    raise ValueError(
        f"invalid user level {value!r} (use guest/user/admin or {GUEST}/{USER}/{ADMIN})"
    )


def level_name(level: int) -> str:
    """Readable name of a level for logs; unknown values are shown as numbers."""
    return NAME_BY_LEVEL.get(level, str(level))
