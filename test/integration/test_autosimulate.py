"""autosimulate: every queued script gets a dry run; ETA events and early warnings."""

from __future__ import annotations

import time
from collections.abc import Callable

from daemonproc import DaemonProcess

from nicos.protocols.daemon import SIM_FAILED, SIM_SUCCESS


def test_queued_scripts_are_dry_run(new_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = new_daemon("autosim", autosimulate=True)
    client = daemon.connect("user")
    try:
        before = time.time()
        good = client.run("maw(mono, 2.2)\nprint('moved')\n", "good")
        eta = client.wait_for("eta", lambda e: e[0] in (SIM_SUCCESS, SIM_FAILED), 60).data
        assert eta[0] == SIM_SUCCESS and eta[1] > before
        client.wait_done(good)
        since = client.mark()
        client.run("maw(sth, 500)\n", "too far")
        eta = client.wait_for("eta", lambda e: e[0] in (SIM_SUCCESS, SIM_FAILED), 60,
                              since).data
        assert eta[0] == SIM_FAILED
        client.wait_for("message", lambda m: "dry run of too far found problems" in m[3],
                        60, since)
        assert client.ask("getstatus")["eta"][0] == SIM_FAILED
    finally:
        client.disconnect()
    daemon.stop_and_check()
