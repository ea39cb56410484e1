"""Benchmarks of the microVM kernel, each figure beside the same work done natively.

Run with `python3 -m nox -s bench`; writes bench/RESULTS.md. Figures are medians
over repeated runs, all taken in the same invocation.
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


def compile_static(name: str, out: Path) -> Path:
    target = out / name
    subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(target), str(PROGRAMS / f"{name}.c")],
        check=True,
    )
    return target


def wall(argv: list[str], runs: int, env: dict[str, str] | None = None) -> list[float]:
    """Whole-process wall times in ms."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            argv,
            check=True,
            stdout=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        times.append((time.perf_counter() - start) * 1e3)
    return times


def served_runs(work: Path, argv: list[str], runs: int) -> list[float]:
    """Wall times of ``argv`` (an ``osv run``) with an ``osv serve`` listening."""
    socket = work / "osv.sock"
    env = dict(os.environ, OSV_SOCKET=str(socket))
    env.pop("OSV_NO_SERVER", None)
    log = work / "serve.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            osv("-v", "serve"), env=env, stdout=output, stderr=output,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        while "serving osv run" not in log.read_text():
            if server.poll() is not None:
                raise RuntimeError(f"osv serve ended: {log.read_text()}")
            time.sleep(0.05)
        times = wall(argv, runs, env)
        served = log.read_text().count("runs osv run for client")
        if served != runs:
            raise RuntimeError(f"{served} of {runs} runs went through the server")
        return times
    finally:
        server.terminate()
        server.wait(timeout=30)


def osv(*args: str) -> list[str]:
    """The `osv` command as users run it: the installed script, else `python -m`."""
    script = Path(sys.executable).parent / "osv"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "osv", *args]


def build(image: Path, program: Path, cmdline: str) -> None:
    """A ramfs image in a raw disk: the kernel's own boot, with no module."""
    subprocess.run(
        osv(
            "build",
            "--fs",
            "ramfs",
            "--format",
            "raw",
            "-o",
            str(image),
            "--from-host",
            str(program),
            "--cmdline",
            cmdline,
        ),  # fmt: skip
        check=True,
    )


def program_stdout(argv: list[str]) -> str:
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    lines = out.splitlines()
    if any(line.startswith("Cmdline: ") for line in lines):
        lines = lines[
            [i for i, line in enumerate(lines) if line.startswith("Cmdline: ")][0] + 1 :
        ]
    return lines[-1]


def runsc(argv: list[str]) -> list[str] | None:
    path = shutil.which("runsc")
    if path is None:
        return None
    return [path, "--rootless", "--network=none", "do", *argv]


def floor_round_trip(calls: int) -> float:
    """µs per trap of a guest that only does `syscall` in a loop (our compiled loop)."""
    # The installed osv-core (what `nox -s bench` installs), never the
    # source tree, which has neither the compiled loop nor the vDSO.
    from osv import _cext
    from osv.hv._machine import MONITOR_SIZE, Machine
    from osv.mm import PROT_EXEC, PROT_READ, AddressSpace, PhysicalMemory
    from osv.sched import ProcessExit
    from osv.sched._lock import KERNEL_LOCK

    dispatch = _cext.load("osv.hv._dispatch")
    code = bytes.fromhex("49c7c4") + calls.to_bytes(4, "little")  # mov r12, calls
    code += bytes.fromhex("b86e0000000f0549ffcc75f4")  # getppid; dec; jnz
    code += bytes.fromhex("b8e70000000f05")  # exit_group
    phys = PhysicalMemory(256 << 20, reserved=MONITOR_SIZE)
    machine = Machine(phys)
    mm = AddressSpace(phys)
    machine.install(mm)
    mm.map_area(0x400000, 4096, PROT_READ | PROT_EXEC)
    mm.write_kernel(0x400000, code)
    vcpu = machine.create_vcpu(mm)
    machine.probe(vcpu)
    vcpu.setup(entry=0x400000, stack=0, lstar=machine.lstar)

    def exit_group(t, *_):  # noqa: ANN001, ANN002, ANN202
        raise ProcessExit(0)

    table = [None] * 512
    table[110] = lambda t, *_: 0
    table[231] = exit_group
    stats = [0]
    start = time.perf_counter()
    try:
        dispatch.run_until_slow_exit(
            vcpu.fd,
            vcpu.run_address,
            vcpu.run_q,
            machine.trap,
            machine.doorbell_gpa,
            table,
            None,
            None,
            stats,
            (),
            KERNEL_LOCK,
        )
    except ProcessExit:
        pass
    elapsed = time.perf_counter() - start
    machine.close()
    return elapsed / stats[0] * 1e6


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()

    # Every other `osv run` here runs in-process, whatever server the
    # machine may have listening.
    os.environ["OSV_NO_SERVER"] = "1"
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        hello = compile_static("hello", out)
        loop = compile_static("getppid_loop", out)
        compute = compile_static("int_loop", out)
        hello_img, loop_img, compute_img = out / "h.img", out / "l.img", out / "c.img"
        build(hello_img, hello, str(hello))
        build(loop_img, loop, f"{loop} 100000")
        build(compute_img, compute, f"{compute} 300000000")

        # Boot: whole command, and the kernel's own part.
        native = wall([str(hello)], args.runs)
        ours = wall(osv("run", str(hello_img)), args.runs)
        served = served_runs(out, osv("run", str(hello_img)), args.runs)
        gvisor_cmd = runsc([str(hello)])
        gvisor = wall(gvisor_cmd, max(3, args.runs // 2)) if gvisor_cmd else None
        kernel_boot = []
        for _ in range(args.runs):
            text = subprocess.run(
                osv("run", "--bootchart", str(hello_img)),
                capture_output=True,
                text=True,
            ).stdout
            stages = dict(
                (line.strip().split(":")[0], float(line.split(":")[1].split("ms")[0]))
                for line in text.splitlines()
                if line.startswith("\t")
            )
            kernel_boot.append(stages["Total time"])
        rows.append("## Boot: static hello, whole process (ms)\n")
        rows.append("| what | median (min, max) | ratio to native |")
        rows.append("|---|---|---|")
        rows.append(f"| native exec | {fmt(native)} | 1.0 |")
        rows.append(
            f"| `osv run` | {fmt(ours)} | {statistics.median(ours) / statistics.median(native):.1f} |"
        )
        if gvisor:
            rows.append(
                f"| gVisor `runsc do` (ptrace) | {fmt(gvisor)} | "
                f"{statistics.median(gvisor) / statistics.median(native):.1f} |"
            )
            rows.append(
                f"| `osv run` with `osv serve` running | {fmt(served)} | "
                f"{statistics.median(served) / statistics.median(native):.1f} |"
            )
            rows.append(
                f"\n`osv run` / gVisor: {statistics.median(ours) / statistics.median(gvisor):.2f}; "
                f"with `osv serve`: {statistics.median(served) / statistics.median(gvisor):.2f}"
            )
        else:
            rows.append("| gVisor | runsc not installed | |")
        rows.append(
            f"\nKernel boot (VM creation to `Total time`, from `--bootchart`): {fmt(kernel_boot)} ms\n"
        )

        # System-call round trip.
        native_call = [
            float(program_stdout([str(loop), "100000"])) for _ in range(args.runs)
        ]
        ours_call = [
            float(program_stdout(osv("run", str(loop_img)))) for _ in range(args.runs)
        ]
        floor = [floor_round_trip(100000) * 1000 for _ in range(max(3, args.runs // 2))]
        rows.append("## System-call round trip: getppid(), ns per call\n")
        rows.append("| what | median (min, max) | ratio |")
        rows.append("|---|---|---|")
        rows.append(f"| native | {fmt(native_call)} | 1.0 |")
        rows.append(
            f"| floor: bare trap loop, compiled dispatch | {fmt(floor)} | "
            f"{statistics.median(floor) / statistics.median(native_call):.0f}x native |"
        )
        rows.append(
            f"| `osv run` | {fmt(ours_call)} | "
            f"{statistics.median(ours_call) / statistics.median(floor):.2f}x floor |"
        )
        if gvisor_cmd:
            gv = [float(program_stdout(runsc([str(loop), "100000"]))) for _ in range(3)]
            rows.append(
                f"| gVisor (ptrace) | {fmt(gv)} | "
                f"{statistics.median(gv) / statistics.median(ours_call):.2f}x ours |"
            )
        rows.append("")

        # Compute.
        native_ms = [
            float(program_stdout([str(compute), "300000000"]).split()[0])
            for _ in range(args.runs // 2 or 1)
        ]
        ours_ms = [
            float(program_stdout(osv("run", str(compute_img))).split()[0])
            for _ in range(args.runs // 2 or 1)
        ]
        rows.append(
            "## Compute: scalar integer loop, 3e8 iterations (ms, measured inside)\n"
        )
        rows.append("| what | median (min, max) | speed vs native |")
        rows.append("|---|---|---|")
        rows.append(f"| native | {fmt(native_ms)} | 1.00 |")
        rows.append(
            f"| `osv run` | {fmt(ours_ms)} | "
            f"{statistics.median(native_ms) / statistics.median(ours_ms):.2f}x |"
        )

    compiled = subprocess.run(
        osv("--version"), capture_output=True, text=True
    ).stdout.strip()
    header = [
        "# Benchmark results",
        "",
        f"Made by `python3 -m nox -s bench` (bench/run.py --runs {args.runs}) on "
        f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"kernel {platform.release()}. `osv --version`: {compiled.splitlines()[0]}.",
        "",
    ]
    Path(args.output).write_text("\n".join(header + rows) + "\n")
    print("\n".join(header + rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
