# Setup file: read by nicos.core.setupfile, which provides device() and configdata().
# ruff: noqa: F821
description = "Demo instrument: monochromator, sample table, temperature, detector"
group = "basic"

# the sample table and the detector are setups of their own, so that other
# instruments can include them too
includes = ["table", "detector"]

devices = dict(
    mono=device(
        "nicos.devices.generic.VirtualMotor",
        description="Monochromator wavelength",
        unit="A",
        abslimits=(0.5, 6.0),
        curvalue=2.0,
        speed=0.5,
    ),
    T=device(
        "nicos.devices.generic.VirtualTemperature",
        description="Sample temperature",
        abslimits=(1.5, 400.0),
        userlimits=(1.5, 350.0),
        curvalue=295.0,
        ramp=60.0,
        tolerance=0.2,
        timeout=900.0,
    ),
)

startupcode = """
printinfo('Demo instrument ready: try maw(mono, 2.5), read(), help(sth)')
"""
