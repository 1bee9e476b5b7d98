"""A small reflectometer: the example of an instrument's own code and setups.

Nothing here is part of ``nicos``: the slit device class and the command
module are found because the setups name them (``custom.refl.devices.Slit``,
``modules = ['custom.refl.commands']``).
"""
