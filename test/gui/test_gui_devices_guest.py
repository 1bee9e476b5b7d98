"""Guests (who may not eval) see units, limits and descriptions in the device panel:
the daemon's getcachekeys includes the devices' parameters, as upstream's cache does."""

from __future__ import annotations

from nicos.clients.gui.panels.devices import COL_NAME, COL_UNIT


def test_guest_sees_units_limits_and_descriptions(make_window, gui_daemon) -> None:
    admin = gui_daemon.client('admin')
    try:
        low, high = admin.eval('sth.userlimits')
        assert admin.ask('eval', "session.getDevice('mono').unit", False) == 'A'
    finally:
        admin.disconnect()
    window = make_window(gui_daemon, user='guest')
    panel = window.devices
    assert window.client.user_level == 0
    assert panel.items['sth'].text(COL_UNIT) == 'deg'
    assert panel.items['mono'].text(COL_UNIT) == 'A'
    assert panel.items['sth'].toolTip(COL_NAME) == 'Sample rotation'
    menu = panel.context_menu('sth')
    texts = [action.text() for action in menu.actions()]
    assert f'Limits: {low:g} .. {high:g} deg' in texts, texts
    assert not menu.actions()[0].isEnabled()  # moving stays reserved to users
