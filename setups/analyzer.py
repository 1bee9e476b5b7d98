# Setup file: read by nicos.core.setupfile, which provides device() and configdata().
# ruff: noqa: F821
description = "Analyser crystal with encoder readback"
group = "optional"

devices = dict(
    ath=device(
        "nicos.devices.generic.VirtualMotor",
        description="Analyser rotation",
        unit="deg",
        abslimits=(-60.0, 60.0),
        speed=3.0,
    ),
    ath_coder=device(
        "nicos.devices.generic.VirtualCoder",
        description="Encoder on the analyser rotation",
        motor="ath",
        unit="deg",
    ),
)
