"""The vDSO: clock_gettime, gettimeofday, time, clock_getres and getcpu answered
in the program without a system call, and agreeing with the host's clocks."""

from __future__ import annotations

import ctypes
import importlib.util
import io
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from osv import vdso
from osv.vdso import _vvar
from osv.vdso._clock import MAX_ERROR_NS, SHIFT, TscClock

CORE_DIR = Path(__file__).resolve().parents[1]
GCC = shutil.which("gcc")
PYTHON = "/usr/bin/python3.11"
STDLIB = "/usr/lib/python3.11"
VM_TIMEOUT = 120
NS = 1_000_000_000
# How far a reading of the vDSO may lie outside the system calls made just
# before and after it. Both read the same host clock to well under a
# microsecond (the kernel steers the vDSO's clock against it); the slack
# covers the host's own jitter, and is far below the tens of microseconds a
# system call takes.
AGREEMENT_NS = 50_000

needs_kvm = pytest.mark.skipif(
    not os.path.exists("/dev/kvm"), reason="boots VMs: needs /dev/kvm"
)
needs_gcc = pytest.mark.skipif(GCC is None, reason="needs gcc to build programs")


def _builder():  # noqa: ANN202 - the module core/vdso/build.py
    """core/vdso/build.py, loaded by path as setup.py loads it."""
    path = CORE_DIR / "vdso" / "build.py"
    spec = importlib.util.spec_from_file_location("osv_vdso_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", autouse=True)
def image() -> Path:
    """The vDSO image the kernel maps, built in place in a source tree.

    Run from a source tree (PYTHONPATH=src), the image is compiled where
    `python3 setup.py build_ext --inplace` puts it, when it is missing or
    older than its sources; an installed wheel carries its own.
    """
    path = Path(vdso.image_path())
    source_root = CORE_DIR / "src"
    if path.parents[2] == source_root and GCC is not None:
        builder = _builder()
        if builder.is_stale(str(source_root)):
            builder.build(str(source_root), require=True)
    if not path.exists():
        pytest.skip(f"no vDSO image at {path} and no gcc to build one")
    return path


# ---- the image ---------------------------------------------------------------------

EXPORTED = (
    "__vdso_clock_gettime",
    "__vdso_gettimeofday",
    "__vdso_time",
    "__vdso_clock_getres",
    "__vdso_getcpu",
)


def test_image_is_a_shared_object_glibc_and_go_can_look_up(image: Path) -> None:
    with open(image, "rb") as stream:
        elf = ELFFile(stream)
        assert elf["e_type"] == "ET_DYN" and elf["e_machine"] == "EM_X86_64"
        segments = list(elf.iter_segments())
        loads = [s for s in segments if s["p_type"] == "PT_LOAD"]
        # One read-only, executable image of the file from address 0.
        assert len(loads) == 1
        assert (loads[0]["p_offset"], loads[0]["p_vaddr"]) == (0, 0)
        assert loads[0]["p_flags"] == 5
        # glibc rewrites a writable PT_DYNAMIC in place; this one must be read-only.
        (dynamic,) = [s for s in segments if s["p_type"] == "PT_DYNAMIC"]
        assert dynamic["p_flags"] == 4

        section = elf.get_section_by_name(".dynamic")
        tags = {tag.entry.d_tag: tag for tag in section.iter_tags()}
        assert tags["DT_SONAME"].soname == "linux-vdso.so.1"
        for needed in ("DT_HASH", "DT_GNU_HASH", "DT_SYMTAB", "DT_STRTAB"):
            assert needed in tags
        assert {"DT_VERSYM", "DT_VERDEF"} <= tags.keys()
        for forbidden in ("DT_NEEDED", "DT_RELA", "DT_REL", "DT_JMPREL", "DT_TEXTREL"):
            assert forbidden not in tags

        definitions = elf.get_section_by_name(".gnu.version_d")
        names = {
            version["vd_ndx"]: next(iter(aux)).name
            for version, aux in definitions.iter_versions()
        }
        assert names == {1: "linux-vdso.so.1", 2: "LINUX_2.6"}
        versions = elf.get_section_by_name(".gnu.version")
        symbols = elf.get_section_by_name(".dynsym")
        exported = {
            symbol.name: names[versions.get_symbol(i)["ndx"]]
            for i, symbol in enumerate(symbols.iter_symbols())
            if i and symbol["st_info"]["type"] == "STT_FUNC"
        }
        for name in EXPORTED:
            assert exported[name] == "LINUX_2.6"
            assert exported[name.removeprefix("__vdso_")] == "LINUX_2.6"


@needs_gcc
def test_vvar_layout_is_the_c_header_s(tmp_path: Path) -> None:
    fields = [
        ("seq", _vvar.OFFSET_SEQ),
        ("features", _vvar.OFFSET_FEATURES),
        ("clock_mask", _vvar.OFFSET_CLOCK_MASK),
        ("tsc_base", _vvar.OFFSET_TSC_BASE),
        ("offset", _vvar.OFFSET_OFFSETS),
        ("resolution", _vvar.OFFSET_RESOLUTION),
        ("cpu_table", _vvar.OFFSET_CPU_TABLE),
        ("tz_minuteswest", _vvar.OFFSET_TIMEZONE),
    ]
    prints = "".join(
        f'printf("{name} %zu\\n", offsetof(struct vvar_page, {name}));\n'
        for name, _ in fields
    )
    source = tmp_path / "layout.c"
    source.write_text(
        '#include <stddef.h>\n#include <stdio.h>\n#include "vvar.h"\n'
        "int main(void) {\n"
        f"{prints}"
        'printf("size %zu\\n", sizeof(struct vvar_page));\nreturn 0;\n}\n'
    )
    program = tmp_path / "layout"
    subprocess.run(
        [GCC, "-I", str(CORE_DIR / "vdso"), "-o", str(program), str(source)],
        check=True,
    )
    output = subprocess.run([program], capture_output=True, text=True, check=True)
    in_c = dict(line.split() for line in output.stdout.splitlines())
    for name, offset in fields:
        assert int(in_c[name]) == offset, name
    assert int(in_c["size"]) == _vvar.VVAR_LAYOUT.size


def test_build_without_a_compiler_leaves_no_image_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builder = _builder()
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    stale = tmp_path / builder.IMAGE
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an image from an earlier build")
    lines: list[str] = []

    assert builder.build(str(tmp_path), require=False, log=lines.append) is False
    assert not stale.exists()
    assert len(lines) == 1 and "building the vDSO failed" in lines[0]

    # What CI asks for with OSV_REQUIRE_CEXT=1: a loud failure.
    monkeypatch.setenv("OSV_REQUIRE_CEXT", "1")
    with pytest.raises(builder.VdsoBuildError, match="OSV_REQUIRE_CEXT=1 requires"):
        builder.build(str(tmp_path), log=lines.append)


def _patched_program_header(image: Path, p_type: int, offset: int, value: int) -> bytes:
    """The image with one field of its first ``p_type`` program header changed."""
    data = bytearray(image.read_bytes())
    e_phoff = struct.unpack_from("<Q", data, 32)[0]
    e_phnum = struct.unpack_from("<H", data, 56)[0]
    for i in range(e_phnum):
        at = e_phoff + 56 * i
        if struct.unpack_from("<I", data, at)[0] == p_type:
            struct.pack_into("<I" if offset == 4 else "<Q", data, at + offset, value)
            return bytes(data)
    raise AssertionError(f"no program header of type {p_type}")


def test_an_image_the_kernel_cannot_map_as_it_is_is_refused(
    image: Path, tmp_path: Path
) -> None:
    assert vdso.load_image(str(image)) == image.read_bytes()
    with pytest.raises(vdso.VdsoError, match="was not built"):
        vdso.load_image(str(tmp_path / "missing"))
    broken = tmp_path / "broken"
    broken.write_bytes(b"#!/bin/sh\n" * 10)
    with pytest.raises(vdso.VdsoError, match="not an ELF file"):
        vdso.load_image(str(broken))
    # PT_LOAD (1) linked at another address (p_vaddr at +16).
    broken.write_bytes(_patched_program_header(image, 1, 16, 0x1000))
    with pytest.raises(vdso.VdsoError, match="one read-only segment at address 0"):
        vdso.load_image(str(broken))
    # PT_DYNAMIC (2) writable (p_flags at +4): glibc would write to it.
    broken.write_bytes(_patched_program_header(image, 2, 4, 6))
    with pytest.raises(vdso.VdsoError, match="no read-only PT_DYNAMIC"):
        vdso.load_image(str(broken))


# ---- the clock's arithmetic, against a simulated host ---------------------------------


class SimulatedHost:
    """A host whose counter runs at ``khz`` and whose CLOCK_MONOTONIC runs
    ``ppm`` parts per million faster than the nominal frequency says."""

    def __init__(self, khz: int, ppm: float) -> None:
        self.khz = khz
        self.ppm = ppm
        self.tsc = 10**12
        self.realtime_offset = 1_700_000_000 * NS

    def advance(self, seconds: float) -> None:
        self.tsc += round(seconds * self.khz * 1000)

    def read_tsc(self) -> int:
        self.tsc += 50  # each reading takes a little time
        return self.tsc

    def clock_ns(self, clock: int) -> int:
        mono = self.tsc * 10**6 * (1 + self.ppm / 1e6) / self.khz
        if clock in (_vvar.CLOCK_REALTIME, _vvar.CLOCK_TAI):
            return round(mono) + self.realtime_offset
        return round(mono)


class SimulatedMachine:
    invariant_tsc = True
    probe_tsc = None

    def __init__(self, host: SimulatedHost, khz: int | None = None) -> None:
        self.host = host
        self._khz = host.khz if khz is None else khz

    def tsc_khz(self, vcpu) -> int:  # noqa: ANN001
        return self._khz


class SimulatedVcpu:
    index = 0

    def __init__(self, host: SimulatedHost, offset: int = 0) -> None:
        self.host = host
        self.offset = offset

    def read_tsc(self) -> int:
        return self.host.read_tsc() + self.offset


@pytest.fixture
def page():  # noqa: ANN201
    """A VvarPage over ordinary memory."""
    buffer = ctypes.create_string_buffer(4096)
    ram = memoryview(buffer).cast("B")
    yield _vvar.VvarPage(ram, ctypes.addressof(buffer), 0)
    ram.release()


def _clock(page, host: SimulatedHost) -> TscClock:  # noqa: ANN001
    return TscClock(
        page,
        read_host_tsc=host.read_tsc,
        read_host_tsc_fenced=host.read_tsc,
        clock_ns=host.clock_ns,
    )


def _published(page) -> tuple[int, int, int, int]:  # noqa: ANN001
    """The page's (tsc_base, mono_ns, mono_frac, mult)."""
    return _vvar.TIME_FIELDS.unpack_from(page.ram, _vvar.OFFSET_TSC_BASE)


def _vdso_reading(fields: tuple[int, int, int, int], tsc: int) -> int:
    """CLOCK_MONOTONIC as vdso.c computes it from the published fields."""
    tsc_base, mono_ns, mono_frac, mult = fields
    delta = max(tsc - tsc_base, 0)
    return mono_ns + ((delta * mult + mono_frac) >> SHIFT)


def _offsets(page) -> list[int]:  # noqa: ANN001
    return list(
        struct.unpack_from(f"<{_vvar.VVAR_CLOCKS}q", page.ram, _vvar.OFFSET_OFFSETS)
    )


def test_steering_follows_a_host_clock_faster_than_nominal_without_jumps(page) -> None:  # noqa: ANN001
    host = SimulatedHost(khz=2_596_142, ppm=40)
    clock = _clock(page, host)
    clock.calibrate(SimulatedMachine(host), SimulatedVcpu(host))
    assert page.clock_mask == _vvar.SERVED_MASK
    # CLOCK_REALTIME is CLOCK_MONOTONIC plus the host's offset between them.
    offsets = _offsets(page)
    assert offsets[_vvar.CLOCK_REALTIME] == host.realtime_offset
    assert offsets[_vvar.CLOCK_REALTIME_COARSE] == host.realtime_offset
    assert offsets[_vvar.CLOCK_MONOTONIC] == 0

    errors = []
    for _ in range(30):
        host.advance(1.0)
        old = _published(page)
        clock.update()
        new = _published(page)
        # The new base point continues the old parameters: no step.
        base = new[0]
        assert _vdso_reading(new, base) == _vdso_reading(old, base)
        errors.append(abs(_vdso_reading(new, host.tsc) - host.clock_ns(1)))
    # 40 ppm off at first (40 µs a second); the frequency is learnt.
    assert errors[0] > 20_000
    assert max(errors[-5:]) < 1_000


def test_a_clock_that_drifts_too_far_stops_serving_time(page) -> None:  # noqa: ANN001
    host = SimulatedHost(khz=1_000_000, ppm=0)
    clock = _clock(page, host)
    clock.calibrate(SimulatedMachine(host), SimulatedVcpu(host))
    host.ppm = 5_000  # the host clock now runs 0.5 % fast
    host.advance(1.0)
    clock.update()
    assert not clock.serving
    assert page.clock_mask == 0
    assert abs(clock.last_error_ns) > MAX_ERROR_NS


@pytest.mark.parametrize(
    "problem",
    ["no invariant TSC", "no frequency", "probe disagrees", "vCPUs disagree"],
)
def test_calibration_refuses_a_counter_it_cannot_trust(page, problem: str) -> None:  # noqa: ANN001
    host = SimulatedHost(khz=2_000_000, ppm=0)
    machine = SimulatedMachine(host, khz=0 if problem == "no frequency" else None)
    clock = _clock(page, host)
    if problem == "no invariant TSC":
        machine.invariant_tsc = False
    if problem == "probe disagrees":
        machine.probe_tsc = (host.tsc, host.tsc + 10**9, host.tsc + 2000)
    if problem == "vCPUs disagree":
        clock.calibrate(machine, SimulatedVcpu(host))
        clock.check_vcpu(SimulatedVcpu(host, offset=10**7))
        assert not clock.serving and page.clock_mask == 0
        return
    with pytest.raises(vdso.VdsoError):
        clock.calibrate(machine, SimulatedVcpu(host))
    assert not clock.serving and page.clock_mask == 0


def test_a_guest_counter_offset_from_the_host_s_is_measured(page) -> None:  # noqa: ANN001
    host = SimulatedHost(khz=2_000_000, ppm=0)
    clock = _clock(page, host)
    # Hardware KVM: the guest counter started near zero when the VM was made.
    offset, uncertainty = clock.measure_offset(SimulatedVcpu(host, offset=-(10**12)))
    assert abs(offset + 10**12) <= uncertainty
    # PVM: the same counter; what the reads cost is no offset.
    assert clock.measure_offset(SimulatedVcpu(host))[0] == 0


# ---- programs in the VM ----------------------------------------------------------------

CLOCKS_PROGRAM = r"""
/* Reads each clock through the vDSO between two real system calls, and
   checks CLOCK_MONOTONIC never steps back over a busy second, ROUNDS times.
   A coarse clock is read between system calls of its precise twin: the
   vDSO gives it the precise time, while the host's coarse clock stands at
   its last timer tick, which may be several milliseconds old. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long ns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

int main(int argc, char **argv) {
    int rounds = atoi(argv[1]);
    int clocks[] = {CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME, CLOCK_TAI,
                    CLOCK_REALTIME_COARSE, CLOCK_MONOTONIC_COARSE};
    long long calls = 0, backwards = 0;
    for (int round = 0; round < rounds; round++) {
        for (unsigned i = 0; i < sizeof clocks / sizeof *clocks; i++) {
            int precise = clocks[i] == CLOCK_REALTIME_COARSE ? CLOCK_REALTIME
                        : clocks[i] == CLOCK_MONOTONIC_COARSE ? CLOCK_MONOTONIC
                        : clocks[i];
            struct timespec before, seen, after;
            syscall(SYS_clock_gettime, precise, &before);
            clock_gettime(clocks[i], &seen);
            syscall(SYS_clock_gettime, precise, &after);
            printf("sample %d %lld %lld %lld\n", clocks[i], ns(before), ns(seen), ns(after));
        }
        struct timespec start, previous, now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        previous = start;
        do {
            clock_gettime(CLOCK_MONOTONIC, &now);
            calls++;
            if (ns(now) < ns(previous)) backwards++;
            previous = now;
        } while (ns(now) - ns(start) < 1000000000LL);
    }
    printf("calls %lld backwards %lld\n", calls, backwards);
    return 0;
}
"""

CALLS_PROGRAM = r"""
/* Makes COUNT calls of each time function and getcpu through glibc. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

int main(int argc, char **argv) {
    int count = atoi(argv[1]);
    long long sum = 0;
    for (int i = 0; i < count; i++) {
        struct timespec ts;
        struct timeval tv;
        unsigned cpu, node;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        gettimeofday(&tv, NULL);
        sum += time(NULL) + ts.tv_nsec + tv.tv_usec;
        clock_getres(CLOCK_REALTIME, &ts);
        getcpu(&cpu, &node);
        sum += cpu + ts.tv_nsec;
    }
    printf("done %d\n", sum != 0);
    return 0;
}
"""
CALLS_PER_ROUND = 5

LAYOUT_PROGRAM = r"""
/* Shows what the program sees of the vDSO: the auxiliary vector entry, the
   /proc/self/maps lines, the symbols in the mapped image, and each function
   against its system call. */
#define _GNU_SOURCE
#include <elf.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#ifdef DYNAMIC
#include <dlfcn.h>
#endif

/* The address of a symbol found by walking the image's own tables. */
static void *lookup(unsigned long base, const char *name) {
    Elf64_Ehdr *ehdr = (Elf64_Ehdr *)base;
    Elf64_Phdr *phdr = (Elf64_Phdr *)(base + ehdr->e_phoff);
    Elf64_Dyn *dyn = NULL;
    for (int i = 0; i < ehdr->e_phnum; i++)
        if (phdr[i].p_type == PT_DYNAMIC) dyn = (Elf64_Dyn *)(base + phdr[i].p_vaddr);
    Elf64_Sym *symtab = NULL; const char *strtab = NULL; Elf32_Word *hash = NULL;
    for (; dyn && dyn->d_tag != DT_NULL; dyn++) {
        if (dyn->d_tag == DT_SYMTAB) symtab = (Elf64_Sym *)(base + dyn->d_un.d_ptr);
        if (dyn->d_tag == DT_STRTAB) strtab = (const char *)(base + dyn->d_un.d_ptr);
        if (dyn->d_tag == DT_HASH) hash = (Elf32_Word *)(base + dyn->d_un.d_ptr);
    }
    if (!symtab || !strtab || !hash) return NULL;
    for (Elf32_Word i = 0; i < hash[1]; i++)
        if (!strcmp(strtab + symtab[i].st_name, name)) return (void *)(base + symtab[i].st_value);
    return NULL;
}

int main(void) {
    unsigned long base = getauxval(AT_SYSINFO_EHDR);
    printf("ehdr %lx\n", base);
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    while (maps && fgets(line, sizeof line, maps))
        if (strstr(line, "[vdso]") || strstr(line, "[vvar]")) printf("maps %s", line);
    if (!base) return 0;
    printf("magic %d\n", memcmp((void *)base, ELFMAG, SELFMAG) == 0);

    int (*gettime)(clockid_t, struct timespec *) = lookup(base, "__vdso_clock_gettime");
    long (*cpu_of)(unsigned *, unsigned *, void *) = lookup(base, "__vdso_getcpu");
    int (*getres)(clockid_t, struct timespec *) = lookup(base, "__vdso_clock_getres");
    printf("found %d %d %d %d\n", gettime != NULL, cpu_of != NULL, getres != NULL,
           lookup(base, "__vdso_time") != NULL && lookup(base, "__vdso_gettimeofday") != NULL);
#ifdef DYNAMIC
    void *handle = dlopen("linux-vdso.so.1", RTLD_LAZY | RTLD_NOLOAD);
    void *versioned = handle ? dlvsym(handle, "__vdso_clock_gettime", "LINUX_2.6") : NULL;
    printf("dlvsym %d\n", versioned != NULL && versioned == (void *)gettime);
#endif

    struct timespec a, v, b;
    syscall(SYS_clock_gettime, CLOCK_REALTIME, &a);
    gettime(CLOCK_REALTIME, &v);
    syscall(SYS_clock_gettime, CLOCK_REALTIME, &b);
    printf("direct %lld %lld %lld\n", a.tv_sec * 1000000000LL + a.tv_nsec,
           v.tv_sec * 1000000000LL + v.tv_nsec, b.tv_sec * 1000000000LL + b.tv_nsec);

    struct timeval tv_a, tv, tv_b;
    syscall(SYS_gettimeofday, &tv_a, NULL);
    gettimeofday(&tv, NULL);
    syscall(SYS_gettimeofday, &tv_b, NULL);
    printf("gettimeofday %lld %lld %lld\n", tv_a.tv_sec * 1000000LL + tv_a.tv_usec,
           tv.tv_sec * 1000000LL + tv.tv_usec, tv_b.tv_sec * 1000000LL + tv_b.tv_usec);
    long t_a = syscall(SYS_time, NULL), t = time(NULL), t_b = syscall(SYS_time, NULL);
    printf("time %ld %ld %ld\n", t_a, t, t_b);

    /* Every clock id but the alarm clocks (8, 9), which this host's kernel
       does not offer to a program running without a real-time clock. */
    int ids[] = {0, 1, 2, 3, 4, 5, 6, 7, 10, 11};
    for (unsigned i = 0; i < sizeof ids / sizeof *ids; i++) {
        int clock = ids[i];
        struct timespec r_sys = {-1, -1}, r = {-2, -2};
        long rc_sys = syscall(SYS_clock_getres, clock, &r_sys);
        int rc = getres(clock, &r);
        printf("getres %d %ld %lld %d %lld\n", clock, rc_sys,
               r_sys.tv_sec * 1000000000LL + r_sys.tv_nsec, rc,
               r.tv_sec * 1000000000LL + r.tv_nsec);
    }
    unsigned cpu = 99, node = 99, cpu_sys = 98, node_sys = 98;
    long rc = cpu_of(&cpu, &node, NULL);
    syscall(SYS_getcpu, &cpu_sys, &node_sys, NULL);
    printf("getcpu %ld %u %u %u %u %d\n", rc, cpu, node, cpu_sys, node_sys, sched_getcpu());
    return 0;
}
"""

THREADS_PROGRAM = r"""
/* Threads on their own vCPUs: getcpu names each one's vCPU as the system
   call does, and no thread sees CLOCK_MONOTONIC earlier than a reading
   another thread published before. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static _Atomic long long latest;
static _Atomic long backwards;

static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void *worker(void *arg) {
    unsigned cpu, node, cpu_sys, node_sys;
    getcpu(&cpu, &node);
    syscall(SYS_getcpu, &cpu_sys, &node_sys, NULL);
    for (int i = 0; i < 1000000; i++) {
        long long published = atomic_load(&latest);
        long long t = now();
        if (t < published) atomic_fetch_add(&backwards, 1);
        while (published < t && !atomic_compare_exchange_weak(&latest, &published, t)) {}
    }
    printf("thread %ld cpu %u %u\n", (long)arg, cpu, cpu_sys);
    return NULL;
}

int main(void) {
    pthread_t threads[3];
    for (long i = 0; i < 3; i++) pthread_create(&threads[i], NULL, worker, (void *)i);
    for (int i = 0; i < 3; i++) pthread_join(threads[i], NULL);
    printf("backwards %ld\n", atomic_load(&backwards));
    return 0;
}
"""

UNMAP_PROGRAM = r"""
/* Unmaps [vvar] and [vdso] (argv[1] = "unmap"), or checks that the vDSO
   still answers ("check"), as a later program of the same boot. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    unsigned long base = getauxval(AT_SYSINFO_EHDR);
    if (!strcmp(argv[1], "unmap")) {
        int rc = mprotect((void *)(base - 4096), 4096, PROT_READ | PROT_WRITE);
        printf("writable vvar %d %d\n", rc, errno);
        printf("munmap %d %d\n", munmap((void *)(base - 4096), 4096),
               munmap((void *)base, 4096));
        struct timespec ts;
        printf("syscall %ld %d\n", syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts),
               ts.tv_sec > 0 || ts.tv_nsec > 0);
        return 0;
    }
    struct timespec a, v, b;
    syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &a);
    clock_gettime(CLOCK_MONOTONIC, &v);
    syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &b);
    printf("check %d %lld %lld %lld\n", memcmp((void *)base, "\177ELF", 4) == 0,
           a.tv_sec * 1000000000LL + a.tv_nsec, v.tv_sec * 1000000000LL + v.tv_nsec,
           b.tv_sec * 1000000000LL + b.tv_nsec);
    return 0;
}
"""

GS_PROGRAM = r"""
/* Sets a GS base of its own, pointing at a word that holds argv[1], then
   asks for its CPU: the vDSO must not read the program's word as its slot. */
#include <asm/prctl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static unsigned long word;

int main(int argc, char **argv) {
    word = strtoul(argv[1], NULL, 0);
    long rc = syscall(SYS_arch_prctl, ARCH_SET_GS, &word);
    unsigned cpu = 99, node = 99, cpu_sys = 98;
    getcpu(&cpu, &node);
    syscall(SYS_getcpu, &cpu_sys, NULL, NULL);
    printf("arch_prctl %ld getcpu %u %u\n", rc, cpu, cpu_sys);
    return 0;
}
"""


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vdso-programs")


def _compile(build_dir: Path, name: str, source: str, *flags: str) -> Path:
    suffix = "-".join(flag.strip("-") for flag in flags)
    output = build_dir / f"{name}-{suffix}"
    if not output.exists():
        source_path = build_dir / f"{name}.c"
        source_path.write_text(textwrap.dedent(source))
        subprocess.run(
            [GCC, "-O2", *flags, "-o", str(output), str(source_path)], check=True
        )
    return output


def _osv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osv", *args],
        capture_output=True,
        text=True,
        timeout=VM_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def _image(directory: Path, *programs: Path | str, extra: tuple[str, ...] = ()) -> Path:
    path = directory / "vdso-test.img"
    sources = [arg for program in programs for arg in ("--from-host", str(program))]
    built = _osv("build", "--fs", "ramfs", "--format", "raw", "-o", str(path),
                 *sources, *extra, "--cmdline", "/bin/true")  # fmt: skip
    assert built.returncode == 0, built.stderr
    return path


def _boot(image: Path, cmdline: str, capfd: pytest.CaptureFixture[str]):  # noqa: ANN202
    """Boot in this process; return the BootResult and the program's output
    (the guest writes to this process's own stdout)."""
    from osv.boot._sequence import BootConfig, Console, boot

    capfd.readouterr()
    result = boot(
        BootConfig(image=str(image), cmdline=cmdline, memory=512 << 20),
        Console(io.StringIO()),
    )
    return result, capfd.readouterr().out


def _run(image: Path, cmdline: str, *, vcpus: int = 1) -> str:
    """Run in a child `osv run`; return the program's output (after Cmdline:)."""
    result = _osv("run", "-c", str(vcpus), str(image), "-e", cmdline)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.split(f"Cmdline: {cmdline}\n", 1)[1]


def _lines(output: str, key: str) -> list[list[str]]:
    return [line.split()[1:] for line in output.splitlines() if line.startswith(key)]


@needs_kvm
@needs_gcc
@pytest.mark.parametrize("linking", ["-static", "-no-pie"])
def test_clocks_agree_with_the_host_and_never_step_back(
    tmp_path: Path, build_dir: Path, linking: str
) -> None:
    program = _compile(build_dir, "clocks", CLOCKS_PROGRAM, linking)
    image = _image(tmp_path, program)
    host_before = time.clock_gettime_ns(time.CLOCK_REALTIME)
    output = _run(image, f"{program} 4")
    host_after = time.clock_gettime_ns(time.CLOCK_REALTIME)

    samples = _lines(output, "sample")
    assert len(samples) == 4 * 6
    for clock, before, seen, after in ([int(v) for v in s] for s in samples):
        assert before - AGREEMENT_NS <= seen <= after + AGREEMENT_NS, (clock, seen)
        if clock == _vvar.CLOCK_REALTIME:
            assert host_before <= seen <= host_after
    ((calls, _, backwards),) = _lines(output, "calls")
    assert int(backwards) == 0
    # A million readings a second is only possible without a system call each.
    assert int(calls) > 1_000_000


@needs_kvm
@needs_gcc
def test_time_functions_and_getcpu_make_no_system_calls(
    tmp_path: Path,
    build_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    program = _compile(build_dir, "calls", CALLS_PROGRAM, "-static")
    image = _image(tmp_path, program)
    rounds = 200

    with_vdso, output = _boot(image, f"{program} {rounds}", capfd)
    assert with_vdso.status == 0 and output == "done 1\n"
    monkeypatch.setenv(vdso.DISABLE_VARIABLE, "1")
    without, output = _boot(image, f"{program} {rounds}", capfd)
    assert without.status == 0 and output == "done 1\n"

    assert without.syscalls - with_vdso.syscalls == rounds * CALLS_PER_ROUND


@needs_kvm
@needs_gcc
def test_a_later_vm_takes_the_first_probe_and_still_serves_time(
    tmp_path: Path,
    build_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from osv.hv import _machine

    machines = []
    real_init = _machine.Machine.__init__

    def recording_init(self, phys) -> None:  # noqa: ANN001
        real_init(self, phys)
        machines.append(self)

    monkeypatch.setattr(_machine.Machine, "__init__", recording_init)
    # As in a fresh process: the first VM probes, the second does not; a VM
    # without the vDSO leaves the counter unjudged, so the next one probes.
    monkeypatch.setattr(_machine, "_probed_trap", None)
    program = _compile(build_dir, "calls", CALLS_PROGRAM, "-static")
    image = _image(tmp_path, program)
    rounds = 50

    monkeypatch.setenv(vdso.DISABLE_VARIABLE, "1")
    _boot(image, f"{program} {rounds}", capfd)
    monkeypatch.delenv(vdso.DISABLE_VARIABLE)
    del machines[0]
    first, output = _boot(image, f"{program} {rounds}", capfd)
    assert first.status == 0 and output == "done 1\n"
    second, output = _boot(image, f"{program} {rounds}", capfd)
    assert second.status == 0 and output == "done 1\n"

    assert machines[0].probe_tsc is not None
    assert machines[1].probe_tsc is None
    assert machines[1].trap == machines[0].trap
    # The vDSO serves time in both.
    monkeypatch.setenv(vdso.DISABLE_VARIABLE, "1")
    without, output = _boot(image, f"{program} {rounds}", capfd)
    assert without.status == 0 and output == "done 1\n"
    for run in (first, second):
        assert without.syscalls - run.syscalls == rounds * CALLS_PER_ROUND


@needs_kvm
@needs_gcc
@pytest.mark.parametrize("linking", ["-static", "-no-pie"])
def test_program_sees_the_vdso_in_auxv_maps_and_symbol_lookups(
    tmp_path: Path, build_dir: Path, linking: str
) -> None:
    flags = [linking] if linking == "-static" else [linking, "-DDYNAMIC"]
    program = _compile(build_dir, "layout", LAYOUT_PROGRAM, *flags)
    output = _run(_image(tmp_path, program), str(program))

    (base,) = _lines(output, "ehdr")
    base = int(base[0], 16)
    maps = {fields[-1]: fields[:2] for fields in _lines(output, "maps")}
    vvar_range, vvar_perms = maps["[vvar]"]
    vdso_range, vdso_perms = maps["[vdso]"]
    vdso_start = int(vdso_range.split("-")[0], 16)
    vvar_start, vvar_end = (int(v, 16) for v in vvar_range.split("-"))
    assert vdso_start == base
    assert vvar_end == base and vvar_end - vvar_start == 4096
    assert vvar_perms.startswith("r--") and vdso_perms.startswith("r-x")
    assert _lines(output, "magic") == [["1"]]
    assert _lines(output, "found") == [["1", "1", "1", "1"]]
    if linking != "-static":
        assert _lines(output, "dlvsym") == [["1"]]

    ((before, seen, after),) = _lines(output, "direct")
    assert int(before) - AGREEMENT_NS <= int(seen) <= int(after) + AGREEMENT_NS
    ((before, seen, after),) = _lines(output, "gettimeofday")
    slack = AGREEMENT_NS // 1000
    assert int(before) - slack <= int(seen) <= int(after) + slack
    ((before, seen, after),) = _lines(output, "time")
    assert int(before) <= int(seen) <= int(after)
    for clock, rc_sys, res_sys, rc, res in _lines(output, "getres"):
        # Every clock id, served or not, gets the system call's answer (a
        # vDSO function returns a failed call's -errno itself).
        if rc_sys == "0":
            assert (rc, res) == ("0", res_sys), clock
        else:
            assert int(rc) < 0, clock
    ((rc, cpu, node, cpu_sys, node_sys, sched_cpu),) = _lines(output, "getcpu")
    assert rc == "0" and cpu == cpu_sys == sched_cpu and node == node_sys == "0"


@needs_kvm
@needs_gcc
def test_threads_on_other_vcpus_get_their_cpu_and_a_common_clock(
    tmp_path: Path, build_dir: Path
) -> None:
    program = _compile(build_dir, "threads", THREADS_PROGRAM, "-static", "-pthread")
    output = _run(_image(tmp_path, program), str(program), vcpus=3)

    cpus = [fields[2:] for fields in _lines(output, "thread")]
    assert len(cpus) == 3
    assert all(by_vdso == by_syscall for by_vdso, by_syscall in cpus)
    assert len({by_vdso for by_vdso, _ in cpus}) == 3
    assert _lines(output, "backwards") == [["0"]]


@needs_kvm
@needs_gcc
def test_switched_off_the_program_gets_no_vdso(
    tmp_path: Path, build_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = _compile(build_dir, "layout", LAYOUT_PROGRAM, "-static")
    image = _image(tmp_path, program)
    monkeypatch.setenv(vdso.DISABLE_VARIABLE, "1")
    output = _run(image, str(program))

    assert _lines(output, "ehdr") == [["0"]]
    assert _lines(output, "maps") == []


@needs_kvm
def test_kernel_without_an_image_runs_programs_with_system_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from osv._kernel import Kernel
    from osv.vdso import _image

    monkeypatch.setattr(_image, "_PACKAGE_DIR", str(tmp_path))
    with caplog.at_level("INFO", logger="osv._kernel"):
        kernel = Kernel(memory=64 << 20)
    try:
        assert kernel.vdso is None
        assert "was not built" in caplog.text
    finally:
        kernel.close()
    kernel = Kernel(memory=64 << 20, vdso=False)
    try:
        assert kernel.vdso is None
    finally:
        kernel.close()


@needs_kvm
@needs_gcc
def test_unmapping_the_vdso_harms_only_that_program(
    tmp_path: Path, build_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    program = _compile(build_dir, "unmap", UNMAP_PROGRAM, "-static")
    image = _image(tmp_path, program)
    result, output = _boot(image, f"{program} unmap; {program} check", capfd)

    assert result.status == 0
    # The data page cannot be made writable (EACCES, 13), as on Linux.
    assert _lines(output, "writable") == [["vvar", "-1", "13"]]
    assert _lines(output, "munmap") == [["0", "0"]]
    assert _lines(output, "syscall") == [["0", "1"]]
    ((magic, before, seen, after),) = _lines(output, "check")
    assert magic == "1"
    assert int(before) - AGREEMENT_NS <= int(seen) <= int(after) + AGREEMENT_NS


@needs_kvm
@needs_gcc
def test_a_program_with_its_own_gs_base_gets_getcpu_from_the_kernel(
    tmp_path: Path, build_dir: Path
) -> None:
    from osv.hv._machine import CPU_TABLE_VA

    program = _compile(build_dir, "gs", GS_PROGRAM, "-static")
    # The program's GS word holds what would be vCPU 5's slot.
    output = _run(_image(tmp_path, program), f"{program} {CPU_TABLE_VA + 40:#x}")

    assert _lines(output, "arch_prctl") == [["0", "getcpu", "0", "0"]]


@needs_kvm
@pytest.mark.skipif(
    not (os.path.exists(PYTHON) and os.path.isdir(STDLIB)),
    reason=f"needs Debian's {PYTHON} and its standard library",
)
def test_python_time_agrees_with_the_host_and_its_start_makes_fewer_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "stdlib.manifest"
    with open(manifest, "w") as out:
        for directory, subdirs, files in os.walk(STDLIB):
            subdirs[:] = [d for d in subdirs if d not in ("test", "idlelib")]
            for name in files:
                host = os.path.join(directory, name)
                out.write(f"{host}: {host}\n")
    image = _image(tmp_path, PYTHON, extra=("--manifest", str(manifest)))

    code = "print('now', __import__('time').time_ns())"
    host_before = time.time_ns()
    with_vdso, output = _boot(image, f'{PYTHON} -c "{code}"', capfd)
    host_after = time.time_ns()
    assert with_vdso.status == 0, output
    ((now,),) = _lines(output, "now")
    assert host_before <= int(now) <= host_after

    started, _ = _boot(image, f"{PYTHON} -c pass", capfd)
    monkeypatch.setenv(vdso.DISABLE_VARIABLE, "1")
    without, _ = _boot(image, f"{PYTHON} -c pass", capfd)
    # Python's start reads the clock about two hundred times.
    assert started.status == without.status == 0
    assert without.syscalls - started.syscalls >= 100
