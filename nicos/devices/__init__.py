"""Devices: generic virtual hardware in ``nicos.devices.generic``."""
