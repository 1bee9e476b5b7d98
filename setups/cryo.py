# Setup file: read by nicos.core.setupfile, which provides device() and configdata().
# ruff: noqa: F821
description = "Cryostat insert for low temperatures (slow)"
group = "optional"

devices = dict(
    T_cryo=device(
        "nicos.devices.generic.VirtualTemperature",
        description="Cryostat temperature",
        abslimits=(0.05, 300.0),
        curvalue=4.2,
        ramp=2.0,
        tolerance=0.05,
    ),
)
