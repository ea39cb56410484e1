"""The vDSO: clock_gettime, gettimeofday, time, clock_getres and getcpu answered
inside the program, from a data page the kernel keeps up to date."""

from osv.vdso._clock import TscClock
from osv.vdso._image import (
    DISABLE_VARIABLE,
    IMAGE_NAME,
    VdsoError,
    disabled_by_environment,
    image_path,
    load_image,
)
from osv.vdso._vdso import Vdso
from osv.vdso._vvar import SERVED_CLOCKS, VvarPage

__all__ = [
    "DISABLE_VARIABLE",
    "IMAGE_NAME",
    "SERVED_CLOCKS",
    "TscClock",
    "Vdso",
    "VdsoError",
    "VvarPage",
    "disabled_by_environment",
    "image_path",
    "load_image",
]
