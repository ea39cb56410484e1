"""The vDSO of one kernel: its frames, its mapping into each program, its clock."""

from __future__ import annotations

import logging

from osv.mm import (
    MAP_PRIVATE,
    MAP_SHARED,
    MMAP_TOP,
    PAGE_SIZE,
    PROT_EXEC,
    PROT_READ,
    page_align_up,
)
from osv.vdso._clock import TscClock
from osv.vdso._image import VdsoError
from osv.vdso._vvar import VvarPage

logger = logging.getLogger(__name__)

VVAR_SIZE = PAGE_SIZE


class Vdso:
    """The image and the vvar page, in frames every program maps read-only.

    Rationale: as on Linux, [vvar] (one page of data the kernel writes) lies
    just below [vdso] (the code), which reaches the data relative to its own
    address; both go at the top of the mmap area, below the dynamic linker,
    where Linux puts them without address-space randomisation. The frames
    belong to the kernel and are lent to each program (AddressSpace's
    borrowed areas): a program that unmaps them loses only its own view.
    The vvar area is a shared mapping, so that making it writable is refused
    (EACCES, as on Linux) instead of giving the program a private copy that
    the kernel no longer updates.
    """

    def __init__(self, machine, image: bytes) -> None:  # noqa: ANN001 - osv.hv Machine
        from osv.hv._machine import CPU_TABLE_SIZE, CPU_TABLE_VA

        phys = machine.phys
        self.machine = machine
        self.image_size = len(image)
        self.image_pages = page_align_up(len(image)) // PAGE_SIZE
        self.vvar_gpa = phys.allocate_kernel(1)
        self.image_gpa = phys.allocate_kernel(self.image_pages)
        phys.ram[self.image_gpa : self.image_gpa + len(image)] = image
        self.vvar = VvarPage(phys.ram, phys.host_address, self.vvar_gpa)
        machine.enable_cpu_slots()
        self.vvar.set_cpu_table(CPU_TABLE_VA, CPU_TABLE_SIZE)
        self.clock = TscClock(self.vvar)
        self._calibrated = False

    def map_into(self, aspace) -> int:  # noqa: ANN001 - osv.mm.AddressSpace
        """Map [vvar] and [vdso] into a new program; return the image's address
        (AT_SYSINFO_EHDR)."""
        size = VVAR_SIZE + self.image_pages * PAGE_SIZE
        start = aspace.free_range(size, top=MMAP_TOP)
        aspace.map_borrowed(
            start, [(self.vvar_gpa, 1)], PROT_READ, MAP_SHARED, name="[vvar]"
        )
        base = start + VVAR_SIZE
        aspace.map_borrowed(
            base,
            [(self.image_gpa, self.image_pages)],
            PROT_READ | PROT_EXEC,
            MAP_PRIVATE,
            name="[vdso]",
        )
        return base

    def vcpu_created(self, vcpu) -> None:  # noqa: ANN001 - osv.hv VCpu
        """Calibrate the clock on the first vCPU (after the start-up probe);
        check that each later one reads the same counter."""
        if self._calibrated:
            self.clock.check_vcpu(vcpu)
            return
        self._calibrated = True
        try:
            self.clock.calibrate(self.machine, vcpu)
        except VdsoError as exc:
            logger.info("vDSO time functions make system calls: %s", exc)
            return
        self.clock.start()

    def withdraw_getcpu(self, reason: str) -> None:
        """Make getcpu a system call from now on."""
        if self.vvar.features:
            self.vvar.withdraw_getcpu()
            logger.info("vDSO getcpu makes system calls: %s", reason)

    @property
    def serves_time(self) -> bool:
        return self.clock.serving

    def close(self) -> None:
        self.clock.stop()
