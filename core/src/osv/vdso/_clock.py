"""The vDSO's clock: the guest's time-stamp counter, calibrated against the host's
clocks and kept in step with them."""

from __future__ import annotations

import _thread
import logging
import threading
import time
from collections.abc import Callable

from osv.hv import _kvm
from osv.vdso._image import VdsoError
from osv.vdso._vvar import (
    CLOCK_BOOTTIME,
    CLOCK_MONOTONIC,
    CLOCK_REALTIME,
    CLOCK_TAI,
    VvarPage,
)

logger = logging.getLogger(__name__)

# Rationale: a program's clock_gettime is computed in the program from the
# CPU's time-stamp counter (TSC), so the kernel must say how counter values
# map to each clock, and keep saying it correctly while the program runs.
#
# Calibration. KVM reports the guest counter's frequency (KVM_GET_TSC_KHZ)
# and its current value (MSR IA32_TSC). The kernel reads the host's own
# counter around that MSR read to learn the guest's offset from it (zero on
# PVM, where ring-3 code reads the real counter; KVM's offset on hardware
# KVM), and checks the value ring-3 code itself read during the start-up
# probe against it. From then on the host's counter, read next to the host's
# CLOCK_MONOTONIC, gives (guest counter, nanoseconds) pairs without stopping
# a vCPU. A CPU without an invariant TSC, a frequency KVM won't give, or a
# probe reading that disagrees, and the time functions stay system calls.
#
# Keeping in step. The counter's nominal frequency is rounded to a kHz and
# the host's clock is steered by NTP, so the vDSO's clock would slowly walk
# away from the host's. Once a second (the first time after 0.1 s) the
# kernel compares the two and publishes a new base point and rate: the base
# is where the old parameters put the clock at that moment, so the clock
# never jumps, and the rate absorbs the difference over the next second,
# plus a frequency correction learnt from the previous seconds. This is
# Linux's timekeeping in miniature. A difference above MAX_ERROR_NS means
# the counter cannot be trusted (the host slept, the frequency is wrong):
# the vDSO then stops serving time and every call becomes a system call.
#
# CLOCK_REALTIME, CLOCK_BOOTTIME and CLOCK_TAI are CLOCK_MONOTONIC plus an
# offset, which on Linux changes only when the clock is set or the host
# resumes; sampled offsets that move by less than STEP_NS are noise and kept.

SHIFT = 32
NS_PER_MS = 1_000_000
# Readings taken in pairs keep the pair read closest together.
SAMPLES = 5
FIRST_UPDATE = 0.1
UPDATE_INTERVAL = 1.0
MAX_ERROR_NS = 1_000_000
# The largest rate correction, in parts per million, as NTP's.
MAX_SLEW_PPM = 500
FREQUENCY_GAIN = 0.5
STEP_NS = 20_000
# KVM_GET_TSC_KHZ below this is not a counter the clock can be built on.
MIN_TSC_KHZ = 1_000
U64 = (1 << 64) - 1


class TscClock:
    """Calibrates the guest's counter and keeps the vvar page's clock in step."""

    def __init__(
        self,
        vvar: VvarPage,
        *,
        read_host_tsc: Callable[[], int] = _kvm.read_host_tsc,
        read_host_tsc_fenced: Callable[[], int] = _kvm.read_host_tsc_fenced,
        clock_ns: Callable[[int], int] = time.clock_gettime_ns,
    ) -> None:
        self.vvar = vvar
        self._read_host_tsc = read_host_tsc
        self._read_host_tsc_fenced = read_host_tsc_fenced
        self._clock_ns = clock_ns
        self.serving = False
        self.khz = 0
        # guest counter = host counter + tsc_offset
        self.tsc_offset = 0
        self.nominal_mult = 0
        self.frequency = 0
        # What the vvar page says: CLOCK_MONOTONIC is mono_ns + (mono_frac +
        # (tsc - tsc_base) * mult) / 2**SHIFT.
        self.tsc_base = 0
        self.mono_ns = 0
        self.mono_frac = 0
        self.mult = 0
        self.offsets: dict[int, int] = {}
        self.last_error_ns = 0
        self._thread_id = 0
        self._last_sample: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._running: threading.Event | None = None

    # ---- calibration ----------------------------------------------------------

    def calibrate(self, machine, vcpu) -> None:  # noqa: ANN001 - osv.hv Machine, VCpu
        """Start serving time from the counter; VdsoError says why it cannot.

        start() then keeps it in step with the host's clocks.
        """
        if not machine.invariant_tsc:
            raise VdsoError(
                "the CPU has no invariant TSC (CPUID 0x80000007 EDX bit 8 is clear)"
            )
        khz = machine.tsc_khz(vcpu)
        if khz < MIN_TSC_KHZ:
            raise VdsoError(f"KVM gives no usable TSC frequency ({khz} kHz)")
        try:
            offset, uncertainty = self.measure_offset(vcpu)
        except _kvm.KvmError as exc:
            raise VdsoError(f"cannot read the guest's TSC: {exc}") from None
        mismatch = None
        if machine.probe_tsc is not None:
            before, seen, after = machine.probe_tsc
            low = before + offset - uncertainty
            high = after + offset + uncertainty
            if not low <= seen <= high:
                mismatch = (
                    f"the TSC read in ring 3 ({seen}) is not the one KVM reports "
                    f"(expected {low}..{high})"
                )
            machine.tsc_verdict = mismatch
        else:
            # A VM that took an earlier VM's probe result (see Machine.probe)
            # takes that VM's verdict on the counter too.
            mismatch = getattr(machine, "tsc_verdict", None)
        if mismatch is not None:
            raise VdsoError(mismatch)
        with self._lock:
            self.khz = khz
            self.tsc_offset = offset
            self.nominal_mult = self.mult = ((NS_PER_MS << SHIFT) + khz // 2) // khz
            self.frequency = 0
            host_tsc, mono = self._sample_monotonic()
            self.offsets = self._sample_offsets()
            self._last_sample = (host_tsc, mono)
            self.vvar.begin()
            try:
                self.tsc_base = host_tsc
                self.mono_ns, self.mono_frac = mono, 0
                self._publish()
            finally:
                self.vvar.end()
            self.serving = True
        logger.info(
            "vDSO clock: TSC at %d kHz, guest counter = host counter %+d (±%d)",
            khz,
            offset,
            uncertainty,
        )

    def measure_offset(self, vcpu) -> tuple[int, int]:  # noqa: ANN001
        """The guest counter's offset from the host's, and its uncertainty, in ticks.

        An offset within its uncertainty of zero is taken as zero: on PVM
        the guest reads the host's counter itself.
        """
        best = None
        for _ in range(SAMPLES):
            before = self._read_host_tsc()
            guest = vcpu.read_tsc()
            after = self._read_host_tsc()
            if best is None or after - before < best[0]:
                best = (after - before, guest - (before + after) // 2)
        span, offset = best
        uncertainty = span // 2 + 1
        logger.debug(
            "vCPU %d: TSC offset %+d ± %d ticks", vcpu.index, offset, uncertainty
        )
        if abs(offset) <= uncertainty:
            offset = 0
        return offset, uncertainty

    def check_vcpu(self, vcpu) -> None:  # noqa: ANN001
        """Stop serving time if a new vCPU's counter is not the first one's."""
        if not self.serving:
            return
        try:
            offset, uncertainty = self.measure_offset(vcpu)
        except _kvm.KvmError as exc:
            self.withdraw(f"cannot read a new vCPU's TSC: {exc}")
            return
        if abs(offset - self.tsc_offset) > uncertainty:
            self.withdraw(
                f"vCPU {vcpu.index}'s TSC is offset by {offset} ticks, the first "
                f"vCPU's by {self.tsc_offset}"
            )

    # ---- the clock, as the vDSO computes it --------------------------------------

    def monotonic_at(self, tsc: int) -> tuple[int, int]:
        """CLOCK_MONOTONIC (ns, and fraction in 2**-SHIFT ns) at guest counter ``tsc``.

        Exactly the vDSO's arithmetic, so that a new base point continues
        the old parameters to the nanosecond and its fraction.
        """
        delta = (tsc - self.tsc_base) & U64
        if delta >> 63:
            delta = 0
        scaled = delta * self.mult + self.mono_frac
        return self.mono_ns + (scaled >> SHIFT), scaled & ((1 << SHIFT) - 1)

    # ---- keeping in step -----------------------------------------------------------

    def update(self, next_interval: float = UPDATE_INTERVAL) -> None:
        """Compare with the host's clock and publish the steered rate (see above)."""
        with self._lock:
            if not self.serving:
                return
            host_tsc, mono = self._sample_monotonic()
            error = mono - self.monotonic_at(host_tsc)[0]
            self.last_error_ns = error
            if abs(error) > MAX_ERROR_NS:
                reason = (
                    f"the TSC clock drifted {error / 1e6:+.3f} ms from the host's "
                    "CLOCK_MONOTONIC"
                )
                self._withdraw_locked(reason)
                return

            # The rate the host's clock really had since the last comparison,
            # folded into the frequency correction.
            last_tsc, last_mono = self._last_sample
            self._last_sample = (host_tsc, mono)
            if host_tsc > last_tsc:
                measured = ((mono - last_mono) << SHIFT) // (host_tsc - last_tsc)
                correction = measured - self.nominal_mult
                self.frequency += round(FREQUENCY_GAIN * (correction - self.frequency))
            # Over the next interval, also make up the difference seen now.
            ticks = max(1, round(next_interval * self.khz * 1000))
            phase = (error << SHIFT) // ticks
            limit = self.nominal_mult * MAX_SLEW_PPM // 1_000_000
            self.frequency = max(-limit, min(limit, self.frequency))
            steer = max(-limit, min(limit, self.frequency + phase))
            logger.debug(
                "vDSO clock: %+d ns from the host's, rate %+.3f ppm",
                error,
                steer * 1e6 / self.nominal_mult,
            )
            offsets = self._sample_offsets()
            for clock, value in offsets.items():
                if abs(value - self.offsets.get(clock, 0)) >= STEP_NS:
                    logger.info(
                        "vDSO clock: clock %d stepped by %+d ns on the host",
                        clock,
                        value - self.offsets.get(clock, 0),
                    )
                    self.offsets[clock] = value

            # The new base point is taken once the page is marked busy: a
            # reader either finished with the old parameters before it, or
            # reads the new ones, which continue the old at that point.
            self.vvar.begin()
            try:
                base = self._read_host_tsc_fenced() + self.tsc_offset
                self.mono_ns, self.mono_frac = self.monotonic_at(base)
                self.tsc_base = base
                self.mult = self.nominal_mult + steer
                self._publish()
            finally:
                self.vvar.end()

    def withdraw(self, reason: str) -> None:
        """Stop serving time from the counter: the time functions make system calls."""
        with self._lock:
            self._withdraw_locked(reason)

    def _withdraw_locked(self, reason: str) -> None:
        if not self.serving:
            return
        self.serving = False
        self.vvar.withdraw_time()
        self._stop.set()
        logger.warning("vDSO clock off, time functions make system calls: %s", reason)

    def stop(self, wait: bool = False) -> None:
        """End the thread that keeps the clock in step (the page stays as it is).

        Without ``wait`` it ends on its own within moments: it touches only
        the vvar page, whose guest memory stays mapped as long as the host
        process, so the kernel's shutdown need not wait for its wake-up.
        """
        self._stop.set()
        running = self._running
        if wait and running is not None and threading.get_ident() != self._thread_id:
            running.wait(timeout=5.0)

    # ---- helpers -------------------------------------------------------------------

    def _publish(self) -> None:
        self.vvar.write_time(
            self.tsc_base, self.mono_ns, self.mono_frac, self.mult, self.offsets
        )

    def start(self) -> None:
        """Start the host thread that keeps the clock in step (see above).

        A bare _thread rather than threading.Thread: Thread.start() waits
        until the new thread has run, which on a busy or virtual host can
        take a scheduler tick (4 ms measured here) out of the program's start.
        """
        if not self.serving or self._running is not None:
            return
        self._running = threading.Event()
        self._thread_id = _thread.start_new_thread(self._keep_in_step, ())

    def _keep_in_step(self) -> None:
        try:
            interval = FIRST_UPDATE
            while not self._stop.wait(interval):
                try:
                    self.update(UPDATE_INTERVAL)
                except Exception as exc:  # noqa: BLE001 - turned into the fallback
                    logger.debug("vDSO clock update failed", exc_info=True)
                    self.withdraw(f"updating the clock failed: {exc}")
                if not self.serving:
                    return
                interval = UPDATE_INTERVAL
        finally:
            self._running.set()

    def _sample_monotonic(self) -> tuple[int, int]:
        """A (guest counter, host CLOCK_MONOTONIC ns) pair read as close together
        as the host allows."""
        best = None
        for _ in range(SAMPLES):
            before = self._read_host_tsc()
            mono = self._clock_ns(CLOCK_MONOTONIC)
            after = self._read_host_tsc()
            if best is None or after - before < best[0]:
                best = (after - before, (before + after) // 2, mono)
        return best[1] + self.tsc_offset, best[2]

    def _sample_offsets(self) -> dict[int, int]:
        """Each served clock's distance from CLOCK_MONOTONIC on the host, in ns."""
        offsets = {CLOCK_MONOTONIC: 0}
        read = self._clock_ns
        for clock in (CLOCK_REALTIME, CLOCK_BOOTTIME, CLOCK_TAI):
            best = None
            for _ in range(SAMPLES):
                before = read(CLOCK_MONOTONIC)
                value = read(clock)
                after = read(CLOCK_MONOTONIC)
                if best is None or after - before < best[0]:
                    best = (after - before, value - (before + after) // 2)
            offsets[clock] = best[1]
        return offsets
