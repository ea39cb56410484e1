"""Dynamically linked workloads (python3, find, sort) in the VM, beside native and the floor.

The floor of this machine for a run is its native time plus, for every system
call and page fault the run made in the VM, one trap round trip as measured
by a minimal guest: a system call (or a guest page fault, which reaches the
kernel the same way) costs the bare trap loop's round trip of bench/run.py,
and a shadow page fault (KVM filling its translation of a page on the
guest's first touch) costs what bench/programs/fault_trip.c measures. Figures
go to bench/RESULTS-dynamic.md.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from run import (  # noqa: E402
    build,
    compile_static,
    floor_round_trip,
    fmt,
    osv,
    program_stdout,
    served_runs,
    wall,
)

PYTHON = "/usr/bin/python3.11"
STDLIB = "/usr/lib/python3.11"
BOOTFS_NAME_MAX = 110


def stdlib_manifest(path: Path) -> None:
    with open(path, "w") as out:
        for directory, subdirs, files in os.walk(STDLIB):
            subdirs[:] = [
                d for d in subdirs if d not in ("test", "idlelib", "lib-dynload")
            ]
            for name in files:
                host = os.path.join(directory, name)
                if len(host) <= BOOTFS_NAME_MAX:
                    out.write(f"{host}: {host}\n")


def native_page_faults(argv: list[str]) -> int:
    """The minor and major page faults of one native run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_minflt - before.ru_minflt) + (after.ru_majflt - before.ru_majflt)


def in_vm_counts(image: Path, cmdline: str, runs: int) -> dict:
    """Counts and the median time of ``runs`` in-process runs of ``cmdline``.

    The first boot in a process also imports the kernel's modules, which is
    interpreter start-up rather than the program's run, so one unmeasured
    boot comes first. ``kvm`` holds KVM's own counters for the last run
    (every exit, including those KVM serves itself), when KVM offers them.
    """
    from osv.boot._sequence import BootConfig, Console, boot

    def once():
        console = Console(io.StringIO())
        saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        try:
            start = time.perf_counter()
            result = boot(BootConfig(image=str(image), cmdline=cmdline), console)
            total = (time.perf_counter() - start) * 1e3
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
        return result, total - result.boot_ns / 1e6

    once()
    in_vm = []
    for _ in range(runs):
        result, ms = once()
        in_vm.append(ms)
    return {
        "syscalls": result.syscalls,
        "faults": result.faults,
        "in_vm": statistics.median(in_vm),
        "kvm": dict(getattr(result, "kvm", None) or {}),
    }


def fault_round_trip(work: Path, runs: int = 3) -> tuple[float, float]:
    """µs per shadow page fault in the VM, and per touch natively (medians).

    bench/programs/fault_trip.c touches one page in eight of a file mapping
    whose frames the host has backed; in the VM each touch is one shadow
    page fault, the kind a program takes on first touching its libraries.
    """
    program = compile_static("fault_trip", work)
    image = work / "fault_trip.img"
    build(image, program, f"{program} /tmp/fault_trip.dat")

    def figure(argv: list[str]) -> float:
        words = program_stdout(argv).split()
        if len(words) != 2 or words[0] != "fault":
            raise RuntimeError(f"no fault figure in the output of {argv}")
        return float(words[1])

    native = statistics.median(
        figure([str(program), str(work / "fault_trip.dat")]) for _ in range(runs)
    )
    ours = statistics.median(figure(osv("run", str(image))) for _ in range(runs))
    return ours, native


def first_touch_rows(work: Path) -> list[str]:
    """What a first touch of fresh memory costs per page, natively and in the VM.

    The kernel maps memory eagerly, so the VM takes no guest page faults, but
    each first touch of a page still costs the host (backing the frame) and
    KVM (a shadow fault). Median of three runs per size.
    """
    program = compile_static("first_touch", work)
    image = work / "first_touch.img"
    build(image, program, str(program))

    def parsed(argv: list[str]) -> dict[int, tuple[float, float]]:
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        found = {}
        for line in out.splitlines():
            words = line.split()
            if len(words) == 3 and words[0].isdigit():
                found[int(words[0])] = (float(words[1]), float(words[2]))
        return found

    native = [parsed([str(program)]) for _ in range(3)]
    ours = [parsed(osv("run", str(image))) for _ in range(3)]
    rows = [
        "",
        "## First touch of fresh memory (µs per 4 KiB page, median of 3)",
        "",
        "Made by the same command (bench/programs/first_touch.c). A mapping of "
        "2 MiB or more gets 2 MiB page-table leaves in the VM.",
        "",
        "| mapping | native first | `osv run` first | native second | `osv run` second |",
        "|---|---|---|---|---|",
    ]
    for size in sorted(native[0]):
        cells = []
        for index in (0, 1):
            for runs in (native, ours):
                cells.append(statistics.median(r[size][index] for r in runs))
        rows.append(
            f"| {size} KiB | {cells[0]:.2f} | {cells[1]:.2f} | {cells[2]:.3f} "
            f"| {cells[3]:.3f} |"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--output", default=str(HERE / "RESULTS-dynamic.md"))
    args = parser.parse_args()
    if not os.path.exists(PYTHON):
        print(f"{PYTHON} is not installed; nothing to measure")
        return 0

    trap_us = statistics.median(floor_round_trip(20000) for _ in range(3))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fault_us, native_fault_us = fault_round_trip(work)
        rows = [
            "# Dynamically linked workloads",
            "",
            f"Made by `python3 -m nox -s bench` (bench/dynamic.py --runs "
            f"{args.runs}). Round trips measured by minimal guests in the same "
            f"run: a system call (the bare trap loop) {trap_us:.1f} µs; a shadow "
            f"page fault (bench/programs/fault_trip.c) {fault_us:.1f} µs, against "
            f"{native_fault_us:.2f} µs for the same touch natively.",
            "",
            "Floor = native time + (system calls + guest page faults) × the "
            "system call's round trip + shadow page faults × the shadow page "
            "fault's round trip. Under PVM's shadow paging, a program's first "
            "touch of a page traps to KVM, which maps that page and up to seven "
            "neighbours; the first floor column leaves these traps out, as this "
            "file did before they were measured. `osv run` is the whole process "
            "(interpreter start-up, boot and the program), in-process or handed "
            "to a running `osv serve`; the in-VM column is "
            "boot() in an already started interpreter that has booted once "
            "before (so the kernel's modules are imported), minus the kernel's "
            "boot. Each figure is the median of its runs. The last two "
            "columns are KVM's own counters "
            "(its binary statistics): every exit of the vCPUs, including those "
            "KVM serves without us, and the shadow page faults it fixed. The "
            "native run's page faults (minor and major, from getrusage) are "
            "beside them.",
            "",
            "| workload | native ms | `osv run` ms | `osv run` with `osv serve` ms "
            "| in-VM ms "
            "| floor without shadow faults ms | in-VM / that | floor ms "
            "| in-VM / floor | system calls | page faults | exits to the kernel "
            "| all KVM exits | shadow page faults | native page faults |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        data = work / "sort-input.txt"
        rng = random.Random(7)
        with open(data, "w") as out:
            while out.tell() < 50 << 20:
                out.write(f"{rng.randrange(10**12):012d} {rng.random():.6f}\n")
        manifest = work / "stdlib.manifest"
        stdlib_manifest(manifest)
        image = work / "dynamic.img"
        sort, find = shutil.which("sort"), shutil.which("find")
        subprocess.run(
            osv(
                "build", "--fs", "ramfs", "--format", "raw", "-o", str(image),
                "--from-host", PYTHON, "--from-host", os.path.join(STDLIB, "lib-dynload"),
                "--from-host", sort, "--from-host", find, "--from-host", str(data),
                "--manifest", str(manifest), "--cmdline", f"{PYTHON} -c pass",
            ),
            check=True,
        )  # fmt: skip
        workloads = [
            ("python3 -c pass", [PYTHON, "-c", "pass"]),
            (
                "python3 -c 'import json, sqlite3'",
                [PYTHON, "-c", "import json, sqlite3"],
            ),
            ("find over the standard library", [find, STDLIB]),
            ("sort of a 50 MB file", [sort, str(data)]),
        ]
        for label, argv in workloads:
            cmdline = " ".join(f'"{word}"' for word in argv)
            ours = wall(osv("run", "-e", cmdline, str(image)), args.runs)
            served = served_runs(work, osv("run", "-e", cmdline, str(image)), args.runs)
            # Native runs back to back, apart from the VM's: each warms the
            # caches for the next, so native is at its best.
            native = wall(argv, args.runs)
            counts = in_vm_counts(image, cmdline, args.runs)
            calls, faults, in_vm = counts["syscalls"], counts["faults"], counts["in_vm"]
            kvm = counts["kvm"]
            traps = statistics.median(native) + (calls + faults) * trap_us / 1000
            shadow = kvm.get("pf_fixed", 0)
            floor = traps + shadow * fault_us / 1000
            rows.append(
                f"| {label} | {fmt(native)} | {fmt(ours)} | {fmt(served)} | {in_vm:.1f} "
                f"| {traps:.1f} | {in_vm / traps:.2f} | {floor:.1f} "
                f"| {in_vm / floor:.2f} | {calls} | {faults} | {calls + faults} "
                f"| {kvm.get('exits', '-')} | {kvm.get('pf_fixed', '-')} "
                f"| {native_page_faults(argv)} |"
            )
        rows += first_touch_rows(work)
    text = "\n".join(rows) + "\n"
    Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
