"""`nicos-gui`: the PyQt5 client of the daemon.

PyQt5 is imported only inside this package.  Layout:

- ``client.py``: the Qt bridge (``QtClient``) around the client library; the only
  place that talks to the daemon.  Events reach the GUI thread as Qt signals.
- ``mainwindow.py``: dock panels, toolbar, status bar, layout persistence.
- ``panels/``: one module per dock panel.
- ``connect.py``: connect dialog and remembered profiles.
- ``values.py``: pure helpers (value parsing, colours, error lines), no Qt.
"""
