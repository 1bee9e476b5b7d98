"""Facility code: one package per instrument (``custom.<instrument>``), with
its own device classes, commands and a ``setups/`` directory."""
