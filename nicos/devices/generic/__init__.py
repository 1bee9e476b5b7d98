"""Generic devices: virtual hardware that behaves like the real thing (takes
time, can fail, can be stopped) and the detector that groups channels."""

from nicos.devices.generic.channels import VirtualChannel, VirtualCounter, VirtualTimer
from nicos.devices.generic.detector import Detector
from nicos.devices.generic.image import VirtualImage
from nicos.devices.generic.virtual_motor import VirtualCoder, VirtualMotor
from nicos.devices.generic.virtual_temperature import VirtualTemperature

__all__ = ["Detector", "VirtualChannel", "VirtualCoder", "VirtualCounter", "VirtualImage",
           "VirtualMotor", "VirtualTemperature", "VirtualTimer"]
