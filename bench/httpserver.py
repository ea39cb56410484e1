"""Benchmarks of the REST API module: wrk against GET /os/uptime, guest loop speed, boot.

Run with `python3 -m nox -s bench`; writes bench/RESULTS-httpserver.md. Traffic
stays on loopback. Figures are medians over repeated runs, all in one invocation.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from run import compile_static, fmt, osv  # noqa: E402

# wrk stays small and bounded: two threads, eight connections, five seconds.
WRK_SECONDS = 5
WRK_THREADS = 2
WRK_CONNECTIONS = 8
# The loop runs alone, then under wrk, then alone again, all in one boot.
IDLE_BEFORE = 4
SPIN_SECONDS = IDLE_BEFORE + WRK_SECONDS + 4
# A console line is read a little after the guest printed it; a rate sample is
# put on one side of the wrk window only with this much room to spare.
MARGIN = 0.2
BUSYBOX = shutil.which("busybox") or "/bin/busybox"

# The control: the same HTTP stack as the module (http.server's threading
# server, HTTP/1.1 keep-alive) answering a constant in a plain host process.
# "split" writes the headers and the body in two sends, as the module does;
# "joined" sends each response in one write.
REFERENCE_SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, mode = int(sys.argv[1]), sys.argv[2]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"2.5"
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        if mode == "split":
            self.wfile.write(head)
            self.wfile.write(body)
        else:
            self.wfile.write(head + body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # wrk resets its connections when it stops; that is not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


server = Server(("127.0.0.1", port), Handler)
server.serve_forever()
"""


class BenchError(Exception):
    """A measurement could not be taken."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                response.read()
            return
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise BenchError(f"nothing answered at {url}")


class Console:
    """The lines a process prints, each with the host time it was read at."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.lines: list[tuple[float, str]] = []
        self._seen = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self._seen:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def wait_for(self, prefix: str, timeout: float = 60) -> float:
        """Host time at which a line starting with ``prefix`` was read."""
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                for when, line in self.lines:
                    if line.startswith(prefix):
                        return when
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise BenchError(f"no line {prefix!r} in {self.text()}")
                self._seen.wait(left)

    def finish(self, timeout: float = 60) -> int:
        status = self.process.wait(timeout=timeout)
        self._reader.join(timeout)
        return status

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def wrk(url: str) -> tuple[float, float, float, float]:
    """(requests per second, p99 latency in ms, start, end) of one bounded wrk run."""
    start = time.monotonic()
    out = subprocess.run(
        ["wrk", "--latency", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}",
         f"-d{WRK_SECONDS}s", url],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    end = time.monotonic()
    if "Non-2xx" in out or "Socket errors" in out:
        raise BenchError(f"wrk saw failed requests:\n{out}")
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if rps is None or p99 is None:
        raise BenchError(f"unexpected wrk output:\n{out}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    return float(rps.group(1)), float(p99.group(1)) * scale, start, end


def split_rates(
    lines: list[tuple[float, str]], start: float, end: float
) -> tuple[list[float], list[float]]:
    """Loop speeds (M iterations/s) measured wholly outside and wholly inside wrk."""
    alone, loaded = [], []
    for when, line in lines:
        if not line.startswith("rate "):
            continue
        rate = float(line.split()[1]) / 1e6
        # Each sample covers the second before the line was printed.
        if when <= start or when - 1.0 >= end + MARGIN:
            alone.append(rate)
        elif when - 1.0 >= start and when <= end + MARGIN:
            loaded.append(rate)
    return alone, loaded


def guest_under_load(image: Path, program: Path) -> tuple[float, ...]:
    """One boot: the loop alone, then under wrk, then alone; returns the figures."""
    port = free_port()
    process = subprocess.Popen(
        osv("run", "-e", f"--httpserver-port={port} {program} {SPIN_SECONDS}",
            str(image)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    console = Console(process)
    try:
        spinning = console.wait_for("spinning")
        time.sleep(max(0.0, spinning + IDLE_BEFORE - time.monotonic()))
        rps, p99, start, end = wrk(f"http://127.0.0.1:{port}/os/uptime")
        if console.finish() != 0:
            raise BenchError(f"the guest failed:\n{console.text()}")
    finally:
        if process.poll() is None:
            process.kill()
    alone, loaded = split_rates(console.lines, start, end)
    return rps, p99, statistics.median(alone), statistics.median(loaded)


def native_under_load(program: Path, mode: str) -> tuple[float, ...]:
    """The same pattern natively, wrk against the reference server."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", REFERENCE_SERVER, str(port), mode],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", server)
        spin = subprocess.Popen(
            [str(program), str(SPIN_SECONDS)], stdout=subprocess.PIPE, text=True
        )
        console = Console(spin)
        spinning = console.wait_for("spinning")
        time.sleep(max(0.0, spinning + IDLE_BEFORE - time.monotonic()))
        rps, p99, start, end = wrk(f"http://127.0.0.1:{port}/")
        console.finish()
    finally:
        server.kill()
        server.wait()
    alone, loaded = split_rates(console.lines, start, end)
    return rps, p99, statistics.median(alone), statistics.median(loaded)


def idle_guest(image: Path) -> tuple[float, float]:
    """wrk against a guest that only sleeps: the server without a busy vCPU."""
    port = free_port()
    seconds = WRK_SECONDS + 10
    process = subprocess.Popen(
        osv("run", "-e", f"--httpserver-port={port} {BUSYBOX} sleep {seconds}",
            str(image)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    console = Console(process)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/os/uptime", process)
        rps, p99, _, _ = wrk(f"http://127.0.0.1:{port}/os/uptime")
        urllib.request.urlopen(
            urllib.request.Request(
                f"http://127.0.0.1:{port}/os/shutdown", method="POST"
            ),
            timeout=10,
        ).read()
        console.finish()
    finally:
        if process.poll() is None:
            process.kill()
    return rps, p99


def boot_once(image: Path, with_module: bool, program: Path) -> tuple[float, float]:
    """("Booted up in" ms, ms from starting `osv run` to the program's first line)."""
    cmdline = str(program)
    if with_module:
        cmdline = f"--httpserver-port={free_port()} {cmdline}"
    started = time.monotonic()
    process = subprocess.Popen(
        osv("run", "-e", cmdline, str(image)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    console = Console(process)
    first_line = console.wait_for("hello")
    if console.finish() != 0:
        raise BenchError(f"the guest failed:\n{console.text()}")
    booted = re.search(r"^Booted up in ([\d.]+) ms$", console.text(), re.M)
    if booted is None:
        raise BenchError(f"no boot time in:\n{console.text()}")
    return float(booted.group(1)), (first_line - started) * 1e3


def build(image: Path, files: list[Path], cmdline: str, module: bool) -> None:
    argv = ["build", "-o", str(image), "--cmdline", cmdline]
    for path in files:
        argv += ["--from-host", str(path)]
    if module:
        argv += ["--module", "httpserver"]
    subprocess.run(osv(*argv), check=True)


def ratio(a: list[float], b: list[float]) -> str:
    return f"{statistics.median(a) / statistics.median(b):.2f}"


def command_line() -> str:
    """The command that is running, with paths inside the repository made relative."""

    def short(path: str) -> str:
        try:
            return str(Path(path).resolve().relative_to(ROOT))
        except ValueError:
            return path

    return shlex.join([short(sys.executable), short(sys.argv[0]), *sys.argv[1:]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--output", default=str(HERE / "RESULTS-httpserver.md"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (scripts/setup installs it); nothing to measure")
        return 0
    if not os.path.exists("/dev/kvm"):
        print("/dev/kvm is missing; nothing to measure")
        return 0
    # Each load run takes a boot and about fifteen seconds.
    load_runs = max(3, args.runs // 3)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        spin = compile_static("spin_rate", out)
        hello = compile_static("hello", out)
        spin_img, idle_img = out / "spin.img", out / "idle.img"
        hello_bare, hello_rest = out / "hello.img", out / "hello-rest.img"
        build(spin_img, [spin], f"{spin} {SPIN_SECONDS}", module=True)
        build(idle_img, [Path(BUSYBOX)], f"{BUSYBOX} sleep 1", module=True)
        build(hello_bare, [hello], str(hello), module=False)
        build(hello_rest, [hello], str(hello), module=True)

        # Load: the guest, then the same pattern natively with both controls.
        guest = [guest_under_load(spin_img, spin) for _ in range(load_runs)]
        native = {
            mode: [native_under_load(spin, mode) for _ in range(load_runs)]
            for mode in ("split", "joined")
        }
        idle = [idle_guest(idle_img) for _ in range(load_runs)]

        # Boot, the two images taken in turn so that drift hits both alike.
        bare_boot, rest_boot = [], []
        for _ in range(args.runs):
            bare_boot.append(boot_once(hello_bare, False, hello))
            rest_boot.append(boot_once(hello_rest, True, hello))

    def column(rows: list[tuple[float, ...]], index: int) -> list[float]:
        return [row[index] for row in rows]

    rows = [
        f"## GET /os/uptime under wrk (-t{WRK_THREADS} -c{WRK_CONNECTIONS} "
        f"-d{WRK_SECONDS}s, loopback), {load_runs} runs\n",
        "The guest runs bench/programs/spin_rate.c, a scalar integer loop. The "
        "controls are plain host processes: http.server's threading server "
        "(the module's stack) answering a constant, beside the same loop run "
        "natively; `split` sends headers and body in two writes as the module "
        "does, `joined` in one.\n",
        "| server | requests/s | p99 latency (ms) |",
        "|---|---|---|",
        f"| module, guest running the loop | {fmt(column(guest, 0))} | "
        f"{fmt(column(guest, 1))} |",
        f"| module, guest asleep (busybox sleep) | {fmt(column(idle, 0))} | "
        f"{fmt(column(idle, 1))} |",
    ]
    for mode, figures in native.items():
        rows.append(
            f"| control: plain http.server, {mode} writes | "
            f"{fmt(column(figures, 0))} | {fmt(column(figures, 1))} |"
        )
    rows += [
        "",
        "With headers and body in two writes, each response waits for TCP's "
        "Nagle algorithm to see the client's delayed acknowledgement of the "
        "headers (about 40 ms on Linux) before the body leaves; one write per "
        "response, or TCP_NODELAY on the connection, avoids that wait.",
    ]
    rows += [
        "",
        "## Loop speed with and without the HTTP load (M iterations/s)\n",
        f"Per-second samples of one run: {IDLE_BEFORE} s alone, {WRK_SECONDS} s "
        "under wrk, then alone; the median of each run's samples, then the "
        "median over runs. Both columns come from the same boots.\n",
        "| where the loop runs | alone | under wrk | loaded / alone |",
        "|---|---|---|---|",
        f"| guest (`osv run`, module serving) | {fmt(column(guest, 2))} | "
        f"{fmt(column(guest, 3))} | {ratio(column(guest, 3), column(guest, 2))} |",
    ]
    for mode, figures in native.items():
        rows.append(
            f"| native, wrk against the {mode} control | {fmt(column(figures, 2))} | "
            f"{fmt(column(figures, 3))} | "
            f"{ratio(column(figures, 3), column(figures, 2))} |"
        )
    rows += [
        "",
        f"Guest loop alone / native loop alone: "
        f"{ratio(column(guest, 2), column(native['split'], 2))}",
        "",
        f"## Boot: static hello, with and without the module (ms), {args.runs} runs\n",
        "| image | `Booted up in` | `osv run` start to the program's first line |",
        "|---|---|---|",
        f"| without httpserver | {fmt(column(bare_boot, 0))} | "
        f"{fmt(column(bare_boot, 1))} |",
        f"| with httpserver | {fmt(column(rest_boot, 0))} | "
        f"{fmt(column(rest_boot, 1))} |",
        f"| difference of medians | "
        f"{statistics.median(column(rest_boot, 0)) - statistics.median(column(bare_boot, 0)):.2f} | "
        f"{statistics.median(column(rest_boot, 1)) - statistics.median(column(bare_boot, 1)):.2f} |",
    ]

    version = subprocess.run(osv("--version"), capture_output=True, text=True)
    header = [
        "# REST API module (osv-mod-httpserver)",
        "",
        f"Made by `{command_line()}` (run from the repository root; "
        "`python3 -m nox -s bench` runs it too) on "
        f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"kernel {platform.release()}, wrk "
        f"{_wrk_version()}. `osv --version`: {version.stdout.splitlines()[0]}.",
        "",
    ]
    Path(args.output).write_text("\n".join(header + rows) + "\n")
    print("\n".join(header + rows))
    return 0


def _wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    first = (out.stdout + out.stderr).split()
    return first[1] if len(first) > 1 else "unknown"


if __name__ == "__main__":
    sys.exit(main())
