# Setup file: read by nicos.core.setupfile, which provides device() and configdata().
# ruff: noqa: F821
description = "Sample table: rotation, scattering angle and translation"
group = "lowlevel"

devices = dict(
    sth=device(
        "nicos.devices.generic.VirtualMotor",
        description="Sample rotation",
        unit="deg",
        abslimits=(-180.0, 180.0),
        userlimits=(-90.0, 90.0),
        speed=2.0,
    ),
    stt=device(
        "nicos.devices.generic.VirtualMotor",
        description="Scattering angle (detector arm)",
        unit="deg",
        abslimits=(-5.0, 120.0),
        curvalue=20.0,
        speed=4.0,
    ),
    sx=device(
        "nicos.devices.generic.VirtualMotor",
        description="Sample translation across the beam",
        unit="mm",
        fmtstr="%.2f",
        abslimits=(-25.0, 25.0),
        speed=1.0,
    ),
    sth_coder=device(
        "nicos.devices.generic.VirtualCoder",
        description="Encoder on the sample rotation",
        motor="sth",
        unit="deg",
        noise=0.001,
    ),
)
