"""`osv build` and `osv run` as a user meets them: console lines, options, errors."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BUSYBOX = shutil.which("busybox")

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists("/dev/kvm"), reason="boots VMs: needs /dev/kvm"
    ),
    pytest.mark.skipif(
        BUSYBOX is None, reason="Debian's busybox-static is not installed"
    ),
]


def osv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osv", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "busybox.img"
    built = osv("build", "--fs", "ramfs", "-o", str(path), "--from-host", BUSYBOX)
    assert built.returncode == 0, built.stderr
    return path


def test_console_shows_version_boot_time_and_cmdline(image: Path) -> None:
    result = osv("run", str(image), "-e", f"{BUSYBOX} echo hi")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("OSv v")
    assert lines[1].startswith("Booted up in ") and lines[1].endswith(" ms")
    assert lines[2] == f"Cmdline: {BUSYBOX} echo hi"
    assert lines[3:] == ["hi"]
    assert result.returncode == 0


def test_default_cmdline_is_the_one_program(image: Path) -> None:
    result = osv("run", str(image))
    assert f"Cmdline: {BUSYBOX}" in result.stdout
    # busybox with no applet lists its applets and succeeds.
    assert "Currently defined functions" in result.stdout


def test_bootchart_prints_stages_instead_of_total(image: Path) -> None:
    result = osv("run", "--bootchart", str(image), "-e", f"{BUSYBOX} true")
    stages = [line for line in result.stdout.splitlines() if line.startswith("\t")]
    assert [s.split(":")[0].strip() for s in stages][-1] == "Total time"
    assert all("ms, (+" in s for s in stages)
    assert "Booted up in" not in result.stdout
    assert result.returncode == 0


def test_unknown_loader_option_prints_usage_and_fails(image: Path) -> None:
    result = osv("run", str(image), "-e", f"--no-such-option {BUSYBOX} true")
    assert "unrecognized option: no-such-option" in result.stdout
    assert "--env=" in result.stdout  # the usage text lists the options
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


def test_env_cwd_and_semicolon_sequence(image: Path) -> None:
    cmdline = f"--env=GREETING=hello --cwd=/dev {BUSYBOX} pwd; {BUSYBOX} env"
    result = osv("run", str(image), "-e", cmdline)
    output = result.stdout.split(f"Cmdline: {cmdline.split(' ', 2)[2]}\n", 1)[1]
    assert output.splitlines()[0] == "/dev"
    assert "GREETING=hello" in output.splitlines()
    assert "OSV_CPUS=1" in output.splitlines()
    assert result.returncode == 0


def test_exit_status_of_last_command_is_returned(image: Path) -> None:
    result = osv("run", str(image), "-e", f"{BUSYBOX} true; {BUSYBOX} false")
    assert result.returncode == 1


def test_redirect_writes_output_to_a_guest_file(image: Path) -> None:
    cmdline = f"--redirect=/tmp/out {BUSYBOX} echo hidden"
    result = osv("run", str(image), "-e", cmdline)
    assert "Writing stdout and stderr to /tmp/out" in result.stdout
    assert result.stdout.endswith(f"Cmdline: {BUSYBOX} echo hidden\n")
    assert result.returncode == 0


def test_empty_command_line_is_refused(image: Path) -> None:
    result = osv("run", str(image), "-e", " ; ")
    assert "This image has an empty command line. Nothing to run." in result.stdout
    assert result.returncode != 0


def test_missing_program_is_a_clear_error(image: Path) -> None:
    result = osv("run", str(image), "-e", "/no/such/program")
    assert "Failed to load object: /no/such/program" in result.stdout
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


def test_proc_self_exe_and_mounts_seen_by_program(image: Path) -> None:
    result = osv(
        "run",
        str(image),
        "-e",
        f"{BUSYBOX} readlink /proc/self/exe; {BUSYBOX} cat /proc/mounts",
    )
    output = result.stdout.split("\n", 3)[3].splitlines()
    assert output[0] == BUSYBOX
    assert "none / ramfs rw 0 0" in output
    assert any(line.startswith("none /proc procfs") for line in output)


def test_broken_image_is_one_line_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.img"
    bogus.write_bytes(b"not an image" * 100)
    result = osv("run", str(bogus))
    assert result.returncode == 1
    assert result.stderr.startswith("osv: error: ")
    assert result.stderr.count("\n") == 1


def test_program_whose_dynamic_linker_is_missing_fails_clearly(tmp_path: Path) -> None:
    manifest = tmp_path / "only-true.manifest"
    manifest.write_text("/bin/true: /bin/true\n")
    path = tmp_path / "dyn.img"
    built = osv(
        "build", "--fs", "ramfs", "-o", str(path), "--manifest", str(manifest),
        "--cmdline", "/bin/true",
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    result = osv("run", str(path))
    assert result.returncode != 0
    assert "Failed to load object: /lib64/ld-linux-x86-64.so.2" in result.stdout
    assert "Traceback" not in result.stderr


def test_build_with_module_filesystem_not_installed_hints_pip(tmp_path: Path) -> None:
    result = osv(
        "build", "-o", str(tmp_path / "x.img"), "--fs", "zfs", "--from-host", BUSYBOX
    )
    assert result.returncode == 1
    assert "pip install osv-mod-zfs" in result.stderr


def test_bad_memory_and_vcpu_options_are_one_line_errors(image: Path) -> None:
    for option in (["-m", "1K"], ["-m", "banana"], ["-c", "0"], ["-c", "100000"]):
        result = osv("run", *option, str(image))
        assert result.returncode in (1, 2), option
        assert (
            "Traceback" not in result.stderr and "internal error" not in result.stderr
        )
        assert result.stderr.strip().count("\n") <= 2, result.stderr


def test_corrupt_elf_with_absurd_segment_is_refused(tmp_path: Path) -> None:
    # A static busybox whose last PT_LOAD claims 64 TiB of memory.
    import struct

    corrupt = tmp_path / "corrupt"
    data = bytearray(Path(BUSYBOX).read_bytes())
    phoff, phentsize, phnum = (
        struct.unpack_from("<Q", data, 32)[0],
        *struct.unpack_from("<HH", data, 54),
    )
    loads = [
        phoff + i * phentsize
        for i in range(phnum)
        if struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 1
    ]
    struct.pack_into("<Q", data, loads[-1] + 40, 1 << 46)  # p_memsz
    corrupt.write_bytes(bytes(data))
    corrupt.chmod(0o755)
    path = tmp_path / "corrupt.img"
    built = osv("build", "--fs", "ramfs", "-o", str(path), "--from-host", str(corrupt))
    assert built.returncode == 0, built.stderr
    result = subprocess.run(
        [sys.executable, "-m", "osv", "run", "-m", "256M", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "more than the guest's" in result.stderr


def test_tmp_is_limited_to_half_the_guest_memory(image: Path) -> None:
    cmdline = f"{BUSYBOX} dd if=/dev/zero of=/tmp/big bs=1M count=40"
    result = osv("run", "-m", "64M", str(image), "-e", cmdline)
    assert "No space left on device" in result.stderr
    assert result.returncode != 0


def test_ampersand_runs_programs_at_once_and_waits_for_them(image: Path) -> None:
    cmdline = f"{BUSYBOX} echo one & {BUSYBOX} echo two & {BUSYBOX} echo three"
    result = osv("run", str(image), "-e", cmdline)
    output = result.stdout.split(f"Cmdline: {cmdline}\n", 1)[1]
    assert sorted(output.splitlines()) == ["one", "three", "two"]
    assert result.returncode == 0


def test_daemon_is_stopped_when_the_foreground_is_done(image: Path) -> None:
    import time

    cmdline = f"{BUSYBOX} sleep 60 &! {BUSYBOX} echo foreground done"
    started = time.monotonic()
    result = osv("run", str(image), "-e", cmdline)
    assert time.monotonic() - started < 30
    assert result.stdout.endswith("foreground done\n")
    assert result.returncode == 0


def test_bang_stops_the_others_when_it_returns(image: Path) -> None:
    import time

    cmdline = f"{BUSYBOX} sleep 60 & {BUSYBOX} false !"
    started = time.monotonic()
    result = osv("run", str(image), "-e", cmdline)
    assert time.monotonic() - started < 30
    assert result.returncode == 1


def test_one_program_with_data_files_is_the_default_command_line(
    tmp_path: Path,
) -> None:
    data = tmp_path / "notes.txt"
    data.write_text("data beside the program\n")
    path = tmp_path / "with-data.img"
    built = osv("build", "--fs", "ramfs", "-o", str(path), "--from-host", BUSYBOX,
                "--from-host", str(data), "--from-host", BUSYBOX)  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert f"Cmdline: {BUSYBOX}\n" in osv("run", str(path)).stdout


def test_boot_reports_kvm_s_own_counters_of_the_run(image: Path) -> None:
    """KVM's statistics: every exit of the run, of which system calls are part."""
    from osv.boot._sequence import BootConfig, Console, boot

    result = boot(
        BootConfig(image=str(image), cmdline=f"{BUSYBOX} true"),
        Console(io.StringIO()),
    )
    if not result.kvm:
        pytest.skip("this KVM offers no binary statistics")
    assert result.status == 0 and result.syscalls > 0
    # Each system call is one doorbell (MMIO) exit on PVM, or one port exit.
    served = result.kvm.get("mmio_exits", 0) + result.kvm.get("io_exits", 0)
    assert served >= result.syscalls
    assert result.kvm["exits"] >= served


def test_each_program_of_a_boot_sees_its_own_proc_self(image: Path) -> None:
    result = osv(
        "run", str(image), "-e",
        f"{BUSYBOX} true; {BUSYBOX} readlink /proc/self; "
        f"{BUSYBOX} grep -c busybox /proc/self/maps",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    pid, maps_lines = result.stdout.splitlines()[-2:]
    assert pid.isdigit() and int(maps_lines) > 0
