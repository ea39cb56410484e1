"""``osv serve``: runs handed to a warm server behave exactly as in-process runs."""

from __future__ import annotations

import _socket
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from guest import osv

from osv import __version__ as osv_version_string
from osv._server import MAGIC, run_via_server

BUSYBOX = shutil.which("busybox")
# An interpreter every user may run (ours may live in root's home).
SYSTEM_PYTHON = "/usr/bin/python3"

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists("/dev/kvm"), reason="these tests boot VMs and need /dev/kvm"
    ),
    pytest.mark.skipif(BUSYBOX is None, reason="needs a static busybox"),
]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("served") / "busybox.img"
    built = osv("build", "--fs", "ramfs", "-o", str(path), "--from-host", BUSYBOX,
                "--cmdline", f"{BUSYBOX} echo hello")  # fmt: skip
    assert built.returncode == 0, built.stderr
    return path


class Server:
    """An ``osv -v serve`` process on its own socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log = path.with_suffix(".log")
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "osv", "-v", "serve", "--socket", str(path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 60
        while "serving osv run on" not in self.log.read_text():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)

    def runs(self) -> int:
        return self.log.read_text().count("runs osv run for client")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture
def server(tmp_path: Path):
    # A short directory: Unix socket paths are limited to 107 bytes.
    directory = Path(f"/tmp/osv-test-{os.getpid()}-{time.monotonic_ns()}")
    directory.mkdir(mode=0o700)
    served = Server(directory / "osv.sock")
    try:
        yield served
    finally:
        if served.process.poll() is None:
            served.stop()
        shutil.rmtree(directory, ignore_errors=True)


def served_env(server: Server, **extra: str) -> dict[str, str]:
    """The environment of a client that uses ``server``."""
    env = dict(os.environ, OSV_SOCKET=str(server.path), **extra)
    env.pop("OSV_NO_SERVER", None)
    return env


def client(server: Server, *args: str, served: bool = True, **kwargs):  # noqa: ANN003, ANN201
    env = served_env(server)
    if not served:
        env["OSV_NO_SERVER"] = "1"
    if "input" not in kwargs:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    kwargs.setdefault("timeout", 120)
    return subprocess.run(
        [sys.executable, "-m", "osv", *args],
        capture_output=True,
        text=True,
        env=env,
        **kwargs,
    )


@pytest.mark.parametrize(
    "cmdline",
    [
        None,
        f"{BUSYBOX} sh -c 'echo out; echo err >&2; exit 3'",
        "/no/such/program",
        "--no-such-option /bin/true",
    ],
)
def test_a_served_run_gives_the_output_and_status_of_an_in_process_run(
    server, image, cmdline
):
    args = ["run", str(image)] + ([] if cmdline is None else ["-e", cmdline])

    served = client(server, *args)
    local = client(server, *args, served=False)

    assert server.runs() == 1
    assert served.returncode == local.returncode
    assert served.stderr == local.stderr
    strip = [line for line in served.stdout.splitlines() if "Booted up" not in line]
    assert strip == [
        line for line in local.stdout.splitlines() if "Booted up" not in line
    ]


def test_standard_input_and_the_working_directory_are_the_clients(server, image):
    result = client(
        server, "run", image.name, "-e", f"{BUSYBOX} tr a-z A-Z",
        input="piped through\n", cwd=image.parent,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("PIPED THROUGH\n")
    assert server.runs() == 1


def test_the_clients_environment_reaches_the_run(server, image):
    env = served_env(server, OSV_DISABLE_VDSO="1")
    result = subprocess.run(
        [sys.executable, "-m", "osv", "-v", "run", str(image)],
        capture_output=True, text=True, timeout=120, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert server.runs() == 1
    assert "no vDSO: switched off (OSV_DISABLE_VDSO=1)" in result.stderr


def sleeping_client(server: Server, image: Path) -> subprocess.Popen:
    """A served ``osv run`` whose program sleeps, once the program has started."""
    process = subprocess.Popen(
        [sys.executable, "-m", "osv", "run", str(image), "-e", f"{BUSYBOX} sleep 60"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=served_env(server),
    )  # fmt: skip
    while not process.stdout.readline().startswith("Cmdline:"):
        assert process.poll() is None
    return process


@pytest.mark.parametrize(
    ("signum", "status"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM)],
)
def test_signals_to_the_client_end_the_run_as_in_process(server, image, signum, status):
    with sleeping_client(server, image) as process:
        process.send_signal(signum)

        assert process.wait(timeout=30) == status
    assert server.runs() == 1


def test_without_a_listening_server_the_run_happens_in_process(tmp_path, image):
    stale = tmp_path / "osv.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(stale))
    listener.close()  # the socket file stays, with no one behind it

    result = subprocess.run(
        [sys.executable, "-m", "osv", "run", str(image)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "OSV_NO_SERVER"}
        | {"OSV_SOCKET": str(stale)},
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("hello\n")


def test_a_server_of_another_version_is_not_used(server, image, monkeypatch):
    monkeypatch.setenv("OSV_SOCKET", str(server.path))
    monkeypatch.delenv("OSV_NO_SERVER")
    assert run_via_server(["run", str(image)], "0.0-another-version") is None

    connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    connection.connect(str(server.path))
    fields = [MAGIC, b"0.0-another-version", b"/", b"", b"0"]
    body = b"".join(struct.pack("<I", len(f)) + f for f in fields)
    connection.sendmsg(
        [struct.pack("<I", len(body)) + body],
        [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("3i", 0, 1, 2))],
    )
    assert connection.recv(1) == b"R"
    connection.close()
    assert server.runs() == 0


def test_a_second_server_on_a_live_socket_is_refused(server):
    second = subprocess.run(
        [sys.executable, "-m", "osv", "serve", "--socket", str(server.path)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip

    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1] == (
        f"osv: error: another osv server is already serving on {server.path}"
    )
    assert server.process.poll() is None


@pytest.mark.parametrize(
    "args", [["run", "--help"], ["run", "--bogus", "x.img"], ["run"]]
)
def test_usage_errors_and_help_are_the_in_process_ones(server, args):
    served = client(server, *args)
    local = client(server, *args, served=False)

    assert (served.returncode, served.stdout, served.stderr) == (
        local.returncode, local.stdout, local.stderr,
    )  # fmt: skip
    assert served.returncode in (0, 2)
    assert server.runs() == 1


@pytest.mark.parametrize("served", [True, False])
def test_a_closed_standard_input_reads_as_empty(server, image, served):
    env = served_env(server) if served else dict(os.environ)
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", sys.executable, "-m", "osv", "run",
         str(image), "-e", f"{BUSYBOX} wc -c"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n0\n")
    assert server.runs() == (1 if served else 0)


def test_each_run_has_a_session_of_its_own(server, image):
    with sleeping_client(server, image) as process:
        child = int(server.log.read_text().split("process ")[-1].split()[0])
        session = int(
            Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[3]
        )
        process.terminate()
        process.wait(timeout=30)

    # Its own session: the client's terminal is not its controlling terminal,
    # so reading it never stops the run (SIGTTIN), wherever the server runs.
    assert session == child


def test_ctrl_z_stops_the_run_with_its_client_and_fg_resumes_both(server, image):
    def wait_for(pid: int, wanted: set[str]) -> None:
        deadline = time.monotonic() + 30
        while _state(pid) not in wanted:
            assert time.monotonic() < deadline, f"{pid} stays {_state(pid)}"
            time.sleep(0.02)

    with sleeping_client(server, image) as process:
        child = int(server.log.read_text().split("process ")[-1].split()[0])
        process.send_signal(signal.SIGTSTP)
        wait_for(process.pid, {"T"})
        wait_for(child, {"T"})
        process.send_signal(signal.SIGCONT)
        wait_for(process.pid, {"S", "R"})
        wait_for(child, {"S", "R"})
        # SIGTERM goes on to the program, which it ends: status 128 + 15.
        process.terminate()
        assert process.wait(timeout=30) == 128 + signal.SIGTERM


@pytest.mark.parametrize("stopped", [False, True], ids=["running", "stopped"])
def test_a_client_killed_outright_takes_its_run_with_it(server, image, stopped):
    with sleeping_client(server, image) as process:
        child = int(server.log.read_text().split("process ")[-1].split()[0])
        if stopped:
            # Ctrl-Z first: the run cannot notice by itself that its client
            # is gone; the server wakes it.
            process.send_signal(signal.SIGTSTP)
            deadline = time.monotonic() + 30
            while _state(child) != "T":
                assert time.monotonic() < deadline, "the run did not stop"
                time.sleep(0.02)
        process.kill()
        process.wait(timeout=30)

    deadline = time.monotonic() + 30
    while Path(f"/proc/{child}").exists():
        assert time.monotonic() < deadline, "the served run outlived its client"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_a_client_that_sends_nothing_holds_up_no_other(server, image):
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(str(server.path))
    try:
        # The server waits up to 10 s for a request; others go on meanwhile.
        result = client(server, "run", str(image), timeout=8)
    finally:
        silent.close()

    assert result.returncode == 0, result.stderr
    assert server.runs() == 1


def test_an_empty_socket_path_is_refused():
    result = subprocess.run(
        [sys.executable, "-m", "osv", "serve", "--socket", ""],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr == "osv: error: --socket needs a path\n"


def test_a_file_in_the_way_of_the_socket_is_left_alone(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    result = subprocess.run(
        [sys.executable, "-m", "osv", "serve", "--socket", str(precious)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"osv: error: {precious} exists and is not a socket"
    )
    assert precious.read_text() == "keep me\n"


@pytest.mark.skipif(
    os.getuid() != 0 or not os.path.exists(SYSTEM_PYTHON),
    reason="needs root (to act as another user) and the system's python3",
)
def test_a_socket_of_another_user_gets_nothing(tmp_path, image):
    directory = Path(f"/tmp/osv-test-other-{os.getpid()}")
    directory.mkdir(mode=0o777, exist_ok=True)
    directory.chmod(0o777)
    path, received = directory / "osv.sock", directory / "received"
    script = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen()\n"
        "print('ready', flush=True)\n"
        "c, _ = s.accept(); c.settimeout(5)\n"
        "data = b''\n"
        "try:\n"
        "    data = c.recv(65536)\n"
        "except OSError:\n"
        "    pass\n"
        "open(sys.argv[2], 'w').write(str(len(data)))\n"
    )
    impostor = subprocess.Popen(
        ["runuser", "-u", "nobody", "--", SYSTEM_PYTHON, "-c", script, str(path),
         str(received)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert impostor.stdout.readline() == "ready\n"
        env = {k: v for k, v in os.environ.items() if k != "OSV_NO_SERVER"}
        result = subprocess.run(
            [sys.executable, "-m", "osv", "run", str(image)],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
            env=env | {"OSV_SOCKET": str(path)},
        )  # fmt: skip
        impostor.wait(timeout=30)
    finally:
        impostor.kill()
        impostor.stdout.close()
    try:
        assert result.returncode == 0, result.stderr
        assert result.stdout.endswith("hello\n")
        assert received.read_text() == "0"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_stopping_the_server_removes_its_socket(server):
    assert server.stop() == 0
    assert not server.path.exists()


def test_a_client_in_the_background_of_its_terminal_runs_in_process(
    server, image, monkeypatch
):
    # A background job reading its terminal must stop (SIGTTIN) as any
    # program does; a served run, in a session of its own, would not.
    monkeypatch.setenv("OSV_SOCKET", str(server.path))
    monkeypatch.delenv("OSV_NO_SERVER")
    monkeypatch.setattr(os, "isatty", lambda fd: True)
    monkeypatch.setattr(os, "tcgetpgrp", lambda fd: os.getpgrp() + 1)

    assert run_via_server(["run", str(image)], osv_version_string) is None
    assert server.runs() == 0


def test_a_full_standard_output_fails_as_in_process(server, image):
    def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        with open("/dev/full", "w") as full:
            return subprocess.run(
                [sys.executable, "-m", "osv", "run", str(image)],
                stdout=full, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                text=True, timeout=120, env=env,
            )  # fmt: skip

    for unbuffered in ("", "1"):
        served = run(served_env(server, PYTHONUNBUFFERED=unbuffered))
        local = run(
            served_env(server, PYTHONUNBUFFERED=unbuffered) | {"OSV_NO_SERVER": "1"}
        )
        assert (served.returncode, served.stderr) == (local.returncode, local.stderr)
    assert server.runs() == 2
