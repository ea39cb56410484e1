"""The vvar page: the clock parameters the kernel publishes for the vDSO to read."""

from __future__ import annotations

import ctypes
import struct
import time

# The layout of struct vvar_page in core/vdso/vvar.h, field for field:
# seq, features, clock_mask, reserved; tsc_base, mono_ns, mono_frac, mult;
# offset[16]; resolution[16]; cpu_table, cpu_table_size; tz_minuteswest,
# tz_dsttime. A test compiles the header and compares the offsets.
VVAR_CLOCKS = 16
VVAR_LAYOUT = struct.Struct(f"<IIIIQQQQ{VVAR_CLOCKS}q{VVAR_CLOCKS}QQQii")
OFFSET_SEQ = 0
OFFSET_FEATURES = 4
OFFSET_CLOCK_MASK = 8
OFFSET_TSC_BASE = 16
OFFSET_OFFSETS = 48
OFFSET_RESOLUTION = OFFSET_OFFSETS + 8 * VVAR_CLOCKS
OFFSET_CPU_TABLE = OFFSET_RESOLUTION + 8 * VVAR_CLOCKS
OFFSET_TIMEZONE = OFFSET_CPU_TABLE + 16
FEATURE_GETCPU = 1
TIME_FIELDS = struct.Struct("<QQQQ")

# Clock ids (linux/time.h) the vDSO serves, each as CLOCK_MONOTONIC plus an
# offset, and the clock whose offset it shares. The coarse clocks read the
# same counter as their precise twins. CLOCK_BOOTTIME differs from
# CLOCK_MONOTONIC by the time the host was suspended, none here unless the
# host sleeps. The CPU-time clocks (2, 3), CLOCK_MONOTONIC_RAW (4), whose
# rate differs from CLOCK_MONOTONIC's by the host's frequency corrections,
# and the alarm clocks (8, 9) are left to the system call.
CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
CLOCK_REALTIME_COARSE = 5
CLOCK_MONOTONIC_COARSE = 6
CLOCK_BOOTTIME = 7
CLOCK_TAI = 11
SERVED_CLOCKS = {
    CLOCK_REALTIME: CLOCK_REALTIME,
    CLOCK_MONOTONIC: CLOCK_MONOTONIC,
    CLOCK_REALTIME_COARSE: CLOCK_REALTIME,
    CLOCK_MONOTONIC_COARSE: CLOCK_MONOTONIC,
    CLOCK_BOOTTIME: CLOCK_BOOTTIME,
    CLOCK_TAI: CLOCK_TAI,
}
SERVED_MASK = sum(1 << clock for clock in SERVED_CLOCKS)


class VvarPage:
    """The kernel's side of the page: a single writer under a sequence count.

    Rationale: the vDSO reads several words that must belong together (the
    base point and the rate), while the kernel may rewrite them at any time
    from another host thread. As Linux does, the writer makes the sequence
    count odd, writes, and makes it even again; a reader that saw an odd
    count, or a different count after reading, reads again. x86 keeps stores
    in program order for other CPUs, so the count and the fields need no
    fence between them; each count update is one aligned 32-bit store.
    """

    def __init__(self, ram: memoryview, host_address: int, gpa: int) -> None:
        self.ram = ram
        self.gpa = gpa
        self._seq = ctypes.c_uint32.from_address(host_address + gpa)
        self._features = ctypes.c_uint32.from_address(
            host_address + gpa + OFFSET_FEATURES
        )
        ram[gpa : gpa + VVAR_LAYOUT.size] = bytes(VVAR_LAYOUT.size)
        resolutions = [0] * VVAR_CLOCKS
        for clock in SERVED_CLOCKS:
            resolutions[clock] = round(time.clock_getres(clock) * 1e9)
        struct.pack_into(f"<{VVAR_CLOCKS}Q", ram, gpa + OFFSET_RESOLUTION, *resolutions)

    def begin(self) -> None:
        """Mark the page busy: readers wait or ask the kernel until end()."""
        self._seq.value = (self._seq.value + 1) | 1

    def end(self) -> None:
        self._seq.value = (self._seq.value + 1) & ~1 & 0xFFFFFFFF

    def write_time(
        self,
        tsc_base: int,
        mono_ns: int,
        mono_frac: int,
        mult: int,
        offsets: dict[int, int],
    ) -> None:
        """Publish the clock parameters (between begin and end)."""
        TIME_FIELDS.pack_into(
            self.ram, self.gpa + OFFSET_TSC_BASE, tsc_base, mono_ns, mono_frac, mult
        )
        values = [0] * VVAR_CLOCKS
        for clock, shared in SERVED_CLOCKS.items():
            values[clock] = offsets.get(shared, 0)
        struct.pack_into(
            f"<{VVAR_CLOCKS}q", self.ram, self.gpa + OFFSET_OFFSETS, *values
        )
        struct.pack_into("<I", self.ram, self.gpa + OFFSET_CLOCK_MASK, SERVED_MASK)

    def withdraw_time(self) -> None:
        """Serve no clock from the page: every call becomes a system call."""
        self.begin()
        try:
            struct.pack_into("<I", self.ram, self.gpa + OFFSET_CLOCK_MASK, 0)
        finally:
            self.end()

    @property
    def clock_mask(self) -> int:
        return struct.unpack_from("<I", self.ram, self.gpa + OFFSET_CLOCK_MASK)[0]

    def set_cpu_table(self, address: int, size: int) -> None:
        """Let getcpu use the CPU table at ``address`` (see osv.hv._machine)."""
        struct.pack_into("<QQ", self.ram, self.gpa + OFFSET_CPU_TABLE, address, size)
        self._features.value = self._features.value | FEATURE_GETCPU

    def withdraw_getcpu(self) -> None:
        self._features.value = self._features.value & ~FEATURE_GETCPU

    @property
    def features(self) -> int:
        return self._features.value
