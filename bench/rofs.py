"""Benchmarks of ROFS images: mkfs throughput, reads in the guest, boot time.

Run with `python3 -m nox -s bench`; writes bench/RESULTS_ROFS.md. Every guest
figure stands beside the same work done natively, medians over repeated runs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
PROGRAMS = HERE / "programs"
PYTHON_LIB = Path("/usr/lib/python3.11")
BIG_FILE_MIB = 256

# Reads a file sequentially in 1 MiB reads, PASSES times, then maps it and
# reads it through the mapping; prints MB/s for each, summing every 8 bytes so
# that the data is really touched in both cases.
READER = r"""
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    int passes = atoi(argv[2]);
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) { perror(argv[1]); return 1; }
    static uint64_t buffer[(1 << 20) / 8];
    uint64_t sum = 0;
    for (int pass = 0; pass < passes; pass++) {
        lseek(fd, 0, SEEK_SET);
        double start = now();
        ssize_t n;
        while ((n = read(fd, buffer, sizeof buffer)) > 0)
            for (ssize_t i = 0; i < n / 8; i++) sum += buffer[i];
        printf("read %.1f\n", st.st_size / (now() - start) / 1e6);
    }
    for (int pass = 0; pass < passes; pass++) {
        double start = now();
        uint64_t *map = mmap(0, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) { perror("mmap"); return 1; }
        for (off_t i = 0; i < st.st_size / 8; i++) sum += map[i];
        printf("mmap %.1f\n", st.st_size / (now() - start) / 1e6);
        munmap(map, st.st_size);
    }
    fprintf(stderr, "%llx\n", (unsigned long long)sum);
    return 0;
}
"""


def osv(*args: str) -> list[str]:
    return [sys.executable, "-m", "osv", *args]


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} (min {min(values):.1f}, max {max(values):.1f})"


def after_cmdline(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Cmdline: "))
    return lines[start + 1 :]


def mkfs_throughput(runs: int) -> list[str]:
    """MB/s and files/s of mkfs over the python3 standard library."""
    from osv.image import ManifestText, read_manifest
    from osv_mod_rofs import write_rofs

    if not PYTHON_LIB.is_dir():
        return [f"## mkfs\n\nskipped: {PYTHON_LIB} is not here\n"]
    # Every file of the tree, as OSv's "/**" manifest form lists them.
    entries = read_manifest(ManifestText(f"{PYTHON_LIB}/**: {PYTHON_LIB}/**"))
    seconds, summary = [], None
    with tempfile.TemporaryFile() as out:
        for _ in range(runs):
            out.seek(0)
            out.truncate()
            start = time.perf_counter()
            summary = write_rofs(entries, out)
            seconds.append(time.perf_counter() - start)
    native = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(
                ["tar", "-cf", f"{tmp}/t.tar", "-C", str(PYTHON_LIB), "."], check=True
            )
            native.append(time.perf_counter() - start)
    megabytes = summary.file_bytes / 1e6
    return [
        "## mkfs: the python3 standard library\n",
        f"{summary.files} files, {summary.inodes} inodes, {megabytes:.1f} MB of file "
        f"data, {summary.image_bytes / 1e6:.1f} MB written.\n",
        "| what | MB/s, median (min, max) | files/s |",
        "|---|---|---|",
        f"| `RoFs.mkfs` | {fmt([megabytes / s for s in seconds])} | "
        f"{summary.files / statistics.median(seconds):.0f} |",
        f"| native `tar -cf` of the same tree | {fmt([megabytes / s for s in native])} "
        f"| {summary.files / statistics.median(native):.0f} |",
        "",
    ]


def guest_reads(out: Path, runs: int) -> list[str]:
    """Sequential 1 MiB reads and an mmap of a 256 MiB file, guest and native."""
    source = out / "reader.c"
    source.write_text(READER)
    reader = out / "reader"
    subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(reader), str(source)], check=True
    )
    data = out / "big.bin"
    with open(data, "wb") as file:
        for _ in range(BIG_FILE_MIB):
            file.write(os.urandom(1 << 20))
    image = out / "reader.qcow2"
    command = f"{reader} {data} {runs}"
    subprocess.run(
        osv("build", "-o", str(image), "--from-host", str(reader), "--from-host",
            str(data), "--cmdline", command),
        check=True,
    )  # fmt: skip

    def figures(lines: list[str]) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {"read": [], "mmap": []}
        for line in lines:
            kind, _, value = line.partition(" ")
            if kind in found:
                found[kind].append(float(value))
        return found

    subprocess.run(["cat", str(data)], stdout=subprocess.DEVNULL, check=True)
    native = figures(
        subprocess.run(
            [str(reader), str(data), str(runs)], capture_output=True, text=True
        ).stdout.splitlines()
    )
    result = subprocess.run(osv("run", str(image)), capture_output=True, text=True)
    guest = figures(after_cmdline(result.stdout))
    rows = [
        f"## Reading a {BIG_FILE_MIB} MiB file from ROFS in the guest (MB/s)\n",
        f"The native figures read the same file from the host's page cache. In "
        f"the guest, the first read pass fills ROFS's segment cache ({runs} "
        "passes each).\n",
        "| what | first pass | later passes, median (min, max) | share of native |",
        "|---|---|---|---|",
    ]
    for kind, label in (("read", "read(2), 1 MiB at a time"), ("mmap", "mmap")):
        native_median = statistics.median(native[kind])
        later = guest[kind][1:] or guest[kind]
        rows.append(
            f"| native {label} | {native[kind][0]:.1f} | {fmt(native[kind][1:] or native[kind])} | 1.00 |"
        )
        rows.append(
            f"| guest {label} | {guest[kind][0]:.1f} | {fmt(later)} | "
            f"{statistics.median(later) / native_median:.2f} |"
        )
    rows.append("")
    return rows


def boot_times(out: Path, runs: int) -> list[str]:
    """The same static program booted from a rofs and from a ramfs image."""
    hello = out / "hello"
    subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(hello), str(PROGRAMS / "hello.c")],
        check=True,
    )
    rows = [
        "## Boot: static hello from rofs and from ramfs images (ms)\n",
        "| image | kernel boot (`Total time`) | whole `osv run` |",
        "|---|---|---|",
    ]
    for fs, fmt_name in (("rofs", "qcow2"), ("rofs", "raw"), ("ramfs", "raw")):
        image = out / f"hello-{fs}.{fmt_name}"
        subprocess.run(
            osv("build", "-o", str(image), "--fs", fs, "--format", fmt_name,
                "--from-host", str(hello)),
            check=True,
        )  # fmt: skip
        kernel, whole = [], []
        for _ in range(runs):
            start = time.perf_counter()
            text = subprocess.run(
                osv("run", "--bootchart", str(image)), capture_output=True, text=True
            ).stdout
            whole.append((time.perf_counter() - start) * 1e3)
            total = next(line for line in text.splitlines() if "Total time" in line)
            kernel.append(float(total.split(":")[1].split("ms")[0]))
        rows.append(f"| {fs} in {fmt_name} | {fmt(kernel)} | {fmt(whole)} |")
    rows.append("")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rofs-output", default=str(HERE / "RESULTS_ROFS.md"))
    # The bench session passes the same arguments to every benchmark script.
    args, _ = parser.parse_known_args()
    if shutil.which("gcc") is None:
        print("bench/rofs.py: gcc is needed to build the guest programs")
        return 1

    rows = mkfs_throughput(max(3, args.runs // 2))
    with tempfile.TemporaryDirectory() as tmp:
        rows += guest_reads(Path(tmp), max(3, args.runs // 2))
        rows += boot_times(Path(tmp), args.runs)

    version = subprocess.run(osv("--version"), capture_output=True, text=True).stdout
    header = [
        "# ROFS benchmark results",
        "",
        f"Made by `python3 -m nox -s bench` (bench/rofs.py --runs {args.runs}) on "
        f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"kernel {platform.release()}. `osv --version`: {version.splitlines()[0]}.",
        "",
    ]
    text = "\n".join(header + rows) + "\n"
    Path(args.rofs_output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
