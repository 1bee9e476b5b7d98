# Setup file: read by nicos.core.setupfile, which provides device() and configdata().
# ruff: noqa: F821
description = "Detector: timer, monitor, counter and a 64x64 area detector"
group = "lowlevel"

# the counter and the image see a Bragg peak at sth = 10 deg
includes = ["table"]

PEAK = dict(motor="sth", peak_center=10.0, peak_width=0.5, background=0.02)

devices = dict(
    timer=device("nicos.devices.generic.VirtualTimer", description="Counting time"),
    mon1=device(
        "nicos.devices.generic.VirtualCounter",
        description="Beam monitor",
        countrate=5000.0,
    ),
    ctr1=device(
        "nicos.devices.generic.VirtualCounter",
        description="Single counter behind the sample",
        countrate=2000.0,
        **PEAK,
    ),
    image=device(
        "nicos.devices.generic.VirtualImage",
        description="Area detector",
        shape=(64, 64),
        countrate=20000.0,
        spot_width=3.0,
        **PEAK,
    ),
    det=device(
        "nicos.devices.generic.Detector",
        description="The detector: count with det.start(t=1) or count(t=1)",
        timers=["timer"],
        monitors=["mon1"],
        counters=["ctr1"],
        images=["image"],
    ),
)
