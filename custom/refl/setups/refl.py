# Setup file: read by nicos.core.setupfile, which provides device() and configdata().
# ruff: noqa: F821
description = "Reflectometer: sample angle, detector angle, entrance slit, detector"
group = "basic"

modules = ["custom.refl.commands"]

devices = dict(
    om=device(
        "nicos.devices.generic.VirtualMotor",
        description="Sample angle omega",
        unit="deg",
        fmtstr="%.3f",
        abslimits=(-2.0, 10.0),
        speed=0.5,
    ),
    tth=device(
        "nicos.devices.generic.VirtualMotor",
        description="Detector angle two-theta",
        unit="deg",
        abslimits=(-2.0, 20.0),
        speed=1.0,
    ),
    s1l=device("nicos.devices.generic.VirtualMotor", description="Slit 1, left blade",
               unit="mm", abslimits=(-20.0, 0.0), curvalue=-1.0, speed=2.0),
    s1r=device("nicos.devices.generic.VirtualMotor", description="Slit 1, right blade",
               unit="mm", abslimits=(0.0, 20.0), curvalue=1.0, speed=2.0),
    s1=device("custom.refl.devices.Slit", description="Entrance slit opening",
              left="s1l", right="s1r"),
    refl_timer=device("nicos.devices.generic.VirtualTimer", description="Counting time"),
    refl_ctr=device("nicos.devices.generic.VirtualCounter",
                    description="Reflected beam; critical edge near om = 0.3 deg",
                    motor="om", peak_center=0.3, peak_width=0.15, countrate=800.0),
    refl_det=device("nicos.devices.generic.Detector", description="Reflectometer detector",
                    timers=["refl_timer"], counters=["refl_ctr"]),
)
