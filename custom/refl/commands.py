"""Commands of the reflectometer, exported by setups that list this module."""

from __future__ import annotations

import logging

from custom.refl.devices import Slit
from nicos.core import Session, usercommand

user_log = logging.getLogger("nicos")


@usercommand
def slits(session: Session) -> None:
    """Show the opening and centre of every slit."""
    found = [d for d in session.devices.values() if isinstance(d, Slit)]
    if not found:
        user_log.info("no slits loaded")
    for slit in found:
        user_log.info("%s: opening %s, centre %s", slit, slit.format(slit.read(), unit=True),
                      slit.format(slit.center, unit=True))
