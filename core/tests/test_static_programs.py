"""Static Linux programs run in the microVM behave as they do natively."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from guest import native, osv, program_output

# Small static programs: two minutes for a build or a VM run, one for a
# native run.
VM_TIMEOUT = 120
NATIVE_TIMEOUT = 60
PROGRAMS = Path(__file__).parent / "programs"
BUSYBOX = shutil.which("busybox")

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/kvm"), reason="these tests boot VMs and need /dev/kvm"
)


def _compilers() -> list[tuple[str, list[str]]]:
    variants = [
        ("static", ["gcc", "-static", "-pthread"]),
        ("static-pie", ["gcc", "-static-pie", "-pthread"]),
    ]
    if shutil.which("musl-gcc"):
        variants.append(("musl", ["musl-gcc", "-static", "-pthread"]))
    return variants


COMPILERS = _compilers()


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("programs")


@pytest.fixture(scope="session")
def compile_program(build_dir: Path):  # noqa: ANN201
    """Compile a test program once per variant; returns its path."""
    cache: dict[tuple[str, str], Path] = {}

    def compile_(name: str, variant: str = "static") -> Path:
        key = (name, variant)
        if key not in cache:
            command = dict(COMPILERS)[variant]
            output = build_dir / f"{name}-{variant}"
            subprocess.run(
                [*command, "-O1", "-o", str(output), str(PROGRAMS / f"{name}.c")],
                check=True,
            )
            cache[key] = output
        return cache[key]

    return compile_


def run_in_vm(
    tmp_path: Path,
    cmdline: str,
    *from_host: str | Path,
    stdin=None,  # noqa: ANN001
) -> subprocess.CompletedProcess[str]:
    image = tmp_path / "test.img"
    built = osv(
        "build",
        "--fs",
        "ramfs",
        "-o",
        str(image),
        *[arg for path in from_host for arg in ("--from-host", str(path))],
        "--cmdline",
        cmdline,
        timeout=VM_TIMEOUT,
    )
    assert built.returncode == 0, built.stderr
    return osv("run", str(image), stdin=stdin, timeout=VM_TIMEOUT)


def run_native(argv: list[str], env: dict[str, str] | None = None, stdin=None):  # noqa: ANN001, ANN201
    return native(argv, env=env, stdin=stdin, timeout=NATIVE_TIMEOUT)


def assert_same(vm: subprocess.CompletedProcess[str], native) -> None:  # noqa: ANN001
    assert program_output(vm.stdout) == native.stdout
    assert vm.stderr == native.stderr
    assert vm.returncode == native.returncode


def run_both(tmp_path: Path, program: Path) -> subprocess.CompletedProcess[str]:
    """Run ``program`` without arguments in the VM and natively; they must
    agree. Returns the VM's run."""
    vm = run_in_vm(tmp_path, str(program), program)
    assert_same(vm, run_native([str(program)]))
    return vm


@pytest.mark.parametrize("variant", [v for v, _ in COMPILERS])
@pytest.mark.parametrize("status", ["0", "3", "255"])
def test_arguments_environment_and_exit_status_match_native(
    tmp_path: Path,
    compile_program,
    variant: str,
    status: str,  # noqa: ANN001
) -> None:
    program = compile_program("echo_args", variant)
    args = [status, "two words", "third"]
    cmdline = f'--env=T_ONE=1 --env=T_TWO=second {program} {status} "two words" third'
    vm = run_in_vm(tmp_path, cmdline, program)
    native = run_native([str(program), *args], env={"T_ONE": "1", "T_TWO": "second"})
    assert_same(vm, native)
    assert vm.returncode == int(status)


def test_standard_streams_through_dev_match_native(
    tmp_path: Path,
    compile_program,  # noqa: ANN001
) -> None:
    run_both(tmp_path, compile_program("dev_fd"))


@pytest.mark.parametrize("name", ["echo args", 'a&b;c!"d'])
def test_a_program_at_an_odd_path_boots_without_a_command_line(
    tmp_path: Path,
    compile_program,
    name: str,  # noqa: ANN001
) -> None:
    # osv build then writes the path in the command line's own quoting.
    program = tmp_path / "odd dir" / name
    program.parent.mkdir()
    shutil.copy(compile_program("echo_args"), program)
    image = tmp_path / "odd.img"
    built = osv("build", "--fs", "ramfs", "-o", str(image), "--from-host", str(program))
    assert built.returncode == 0, built.stderr
    vm = osv("run", str(image), timeout=VM_TIMEOUT)
    assert_same(vm, run_native([str(program)]))


@pytest.mark.parametrize("variant", [v for v, _ in COMPILERS])
def test_files_in_image_and_tmp_match_native(
    tmp_path: Path,
    compile_program,
    variant: str,  # noqa: ANN001
) -> None:
    program = compile_program("files", variant)
    data = tmp_path / "data"
    data.mkdir()
    payload = data / "payload.bin"
    payload.write_bytes(bytes(range(256)) * 300)
    vm = run_in_vm(tmp_path, f"{program} {payload}", program, data)
    # Natively the program writes under /tmp/work; the VM has its own /tmp.
    if os.path.exists("/tmp/work"):
        pytest.skip("/tmp/work exists on this host; the native run would clash")
    native = run_native([str(program), str(payload)])
    assert_same(vm, native)


@pytest.mark.parametrize("variant", [v for v, _ in COMPILERS])
def test_memory_heap_mmap_and_sparse_reservation_match_native(
    tmp_path: Path,
    compile_program,
    variant: str,  # noqa: ANN001
) -> None:
    run_both(tmp_path, compile_program("memory", variant))


def test_time_sleep_random_and_uname_match_native(
    tmp_path: Path,
    compile_program,  # noqa: ANN001
) -> None:
    vm = run_both(tmp_path, compile_program("clock"))
    assert "slept at least 20 ms: 1" in vm.stdout


def test_unknown_system_call_gets_enosys_and_program_goes_on(
    tmp_path: Path,
    compile_program,  # noqa: ANN001
) -> None:
    program = compile_program("enosys")
    vm = run_in_vm(tmp_path, str(program), program)
    native = run_native([str(program)])
    assert program_output(vm.stdout) == native.stdout
    assert "Function not implemented" in native.stdout
    assert vm.returncode == 0
    assert "unimplemented system call 499 (unknown)" in vm.stderr


def test_null_dereference_reports_fault_and_fails(
    tmp_path: Path,
    compile_program,  # noqa: ANN001
) -> None:
    program = compile_program("nullderef")
    vm = run_in_vm(tmp_path, str(program), program)
    assert program_output(vm.stdout) == "about to crash\n"
    assert vm.returncode == 128 + 11
    assert "page fault at address 0x0 (read, unmapped page)" in vm.stderr
    assert "in crash_here+" in vm.stderr
    assert "rax" in vm.stderr and "Traceback" not in vm.stderr


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small directory tree with files of several sizes, a link and a subdir."""
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "alpha.txt").write_text("".join(f"{i} alpha\n" for i in range(300, 0, -1)))
    (root / "beta.bin").write_bytes(hashlib.sha256(b"x").digest() * 1000)
    (root / "sub" / "gamma").write_text("gamma\n")
    (root / "empty").write_bytes(b"")
    (root / "link").symlink_to("alpha.txt")
    return root


BUSYBOX_COMMANDS = [
    ["echo", "hello", "from", "busybox"],
    ["cat", "{tree}/alpha.txt"],
    ["sha256sum", "{tree}/beta.bin", "{tree}/alpha.txt"],
    ["sort", "-n", "{tree}/alpha.txt"],
    ["wc", "{tree}/alpha.txt", "{tree}/beta.bin"],
    ["seq", "5", "3", "40"],
    ["head", "-n", "7", "{tree}/alpha.txt"],
    ["tr", "a-z", "A-Z"],
]


@pytest.mark.skipif(BUSYBOX is None, reason="Debian's busybox-static is not installed")
@pytest.mark.parametrize("command", BUSYBOX_COMMANDS, ids=lambda c: c[0])
def test_busybox_commands_match_native(
    tmp_path: Path, tree: Path, command: list[str]
) -> None:
    argv = [BUSYBOX, *(word.format(tree=tree) for word in command)]
    # Every command gets the same file on stdin (tr reads it; others ignore it).
    with open(tree / "alpha.txt") as stdin:
        vm = run_in_vm(
            tmp_path, " ".join(f'"{a}"' for a in argv), BUSYBOX, tree, stdin=stdin
        )
    with open(tree / "alpha.txt") as stdin:
        native = run_native(argv, stdin=stdin)
    assert_same(vm, native)
    assert native.stdout


def _ls_columns(output: str) -> list[tuple[str, str, str]]:
    """Type, size and name from each `ls -l` line (times and owners aside)."""
    rows = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 9:
            continue
        rows.append((fields[0][0], fields[4], " ".join(fields[8:])))
    return rows


@pytest.mark.skipif(BUSYBOX is None, reason="Debian's busybox-static is not installed")
def test_busybox_ls_long_names_types_sizes_match_native(
    tmp_path: Path, tree: Path
) -> None:
    vm = run_in_vm(tmp_path, f"{BUSYBOX} ls -l {tree}", BUSYBOX, tree)
    native = run_native([BUSYBOX, "ls", "-l", str(tree)])
    assert vm.returncode == native.returncode == 0, vm.stderr
    assert _ls_columns(program_output(vm.stdout)) == _ls_columns(native.stdout)
    assert len(_ls_columns(native.stdout)) == 5


def test_no_kvm_gives_one_clear_line(tmp_path: Path, compile_program) -> None:  # noqa: ANN001
    program = compile_program("echo_args")
    image = tmp_path / "img"
    built = osv(
        "build", "--fs", "ramfs", "-o", str(image), "--from-host", str(program),
        timeout=VM_TIMEOUT,
    )  # fmt: skip
    assert built.returncode == 0
    code = (
        "import sys, osv.hv._kvm as k; k.KVM_DEVICE = '/nonexistent/kvm';"
        "from osv.cli import main; sys.exit(main(['run', sys.argv[1]]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(image)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "/nonexistent/kvm does not exist" in result.stderr


@pytest.mark.parametrize("variant", [v for v, _ in COMPILERS])
def test_threads_match_native(tmp_path: Path, compile_program, variant: str) -> None:  # noqa: ANN001
    program = compile_program("threads", variant)
    vm = run_in_vm(tmp_path, str(program), program)
    assert_same(vm, run_native([str(program)]))
    assert "counter 400000 shared 1200 joined 60" in vm.stdout


@pytest.mark.skipif(BUSYBOX is None, reason="needs a static busybox")
def test_cat_to_a_full_device_fails_as_natively(tmp_path: Path) -> None:
    # busybox cat tries sendfile first and, when that fails, reads the file
    # again itself: the failed sendfile must not have consumed the data.
    image = tmp_path / "cat.img"
    built = osv("build", "--fs", "ramfs", "-o", str(image), "--from-host", BUSYBOX,
                "--cmdline", f"{BUSYBOX} cat {BUSYBOX}")  # fmt: skip
    assert built.returncode == 0, built.stderr
    with open("/dev/full", "w") as full:
        vm = subprocess.run(
            [sys.executable, "-m", "osv", "run", str(image)], stdout=full,
            stderr=subprocess.PIPE, text=True, timeout=VM_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        host = subprocess.run(
            [BUSYBOX, "cat", BUSYBOX], stdout=full, stderr=subprocess.PIPE,
            text=True, timeout=NATIVE_TIMEOUT,
        )  # fmt: skip

    assert (vm.returncode, vm.stderr) == (host.returncode, host.stderr)
    assert host.returncode == 1
