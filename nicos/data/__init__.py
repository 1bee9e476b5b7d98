"""Measured data: scan datasets, their files, and the value history.

- ``dataset``: one scan (or count) as numpy-ready columns, and its JSON form
  for clients.
- ``datafile``: the text file every dataset is written to.
- ``manager``: numbering, files, events and the recent datasets of a session.
- ``history``: device values over time in an SQLite file.
"""
