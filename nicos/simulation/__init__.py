"""Simulation: a script runs in a process of its own, on the same setups,
in a dry run with virtual time, and reports how long it would take, what
each device would cover, and what would go wrong, before anything moves.

- ``wire``: what the daemon and the simulation process say to each other
  (JSON lines), and the snapshot of the instrument the simulation starts from.
- ``names``: a check for names a script uses but nothing defines (typos).
- ``hooks``: virtual time (sleeping advances a ManualClock).
- ``runner``: sets up the dry-run session and runs the script.
- ``child``: the process's entry point, ``python -m nicos.simulation.child``.

This package never imports the daemon.
"""
