"""Booting from the block layer: qcow2 images, /dev/vblk*, the root file system's module."""

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from osv.image import DiskImage, ImageDescriptor, write_image

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
MiB = 1024 * 1024

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/kvm"), reason="these tests boot VMs and need /dev/kvm"
)
qemu_img = shutil.which("qemu-img")
needs_qemu_img = pytest.mark.skipif(
    qemu_img is None, reason="qemu-img is not installed"
)
rofs_installed = importlib.util.find_spec("osv_mod_rofs") is not None


def osv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osv", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def program_output(stdout: str) -> str:
    """The program's own stdout: what follows the kernel's `Cmdline:` line."""
    lines = stdout.splitlines(keepends=True)
    for number, line in enumerate(lines):
        if line.startswith("Cmdline: "):
            return "".join(lines[number + 1 :])
    raise AssertionError(f"no Cmdline line in console output:\n{stdout}")


def build(path: Path, *args: str) -> Path:
    built = osv("build", "-o", str(path), "--from-host", BUSYBOX, *args)
    assert built.returncode == 0, built.stderr
    return path


def test_a_ramfs_image_in_a_qcow2_container_boots(tmp_path: Path) -> None:
    image = build(tmp_path / "a.qcow2", "--fs", "ramfs", "--format", "qcow2")
    assert image.read_bytes()[:4] == b"QFI\xfb"

    result = osv("run", str(image), "-e", f"{BUSYBOX} echo from qcow2")

    assert result.returncode == 0, result.stderr
    assert program_output(result.stdout) == "from qcow2\n"


def test_the_disk_and_its_root_partition_are_block_devices_in_dev(
    tmp_path: Path,
) -> None:
    image = build(tmp_path / "a.img", "--fs", "ramfs", "--format", "raw")
    with DiskImage.open(image) as opened:
        (root,) = opened.partitions()
        partition = opened.read(root.start, root.size)

    listing = osv("run", str(image), "-e", f"--rootfs=ramfs {BUSYBOX} ls -l /dev")
    digest = osv(
        "run", str(image), "-e", f"--rootfs=ramfs {BUSYBOX} sha256sum /dev/vblk0.1"
    )

    lines = program_output(listing.stdout).splitlines()
    assert any(
        line.startswith("brw-rw----") and line.endswith(" vblk0") for line in lines
    )
    assert any(line.endswith(" vblk0.1") for line in lines)
    assert program_output(digest.stdout).split()[0] == (
        hashlib.sha256(partition).hexdigest()
    )


def test_without_rootfs_the_boot_tries_the_known_types_and_stays_on_bootfs(
    tmp_path: Path,
) -> None:
    # -e replaces the whole command line, --rootfs=ramfs included; the image
    # loads no module with a root file system, so none is found.
    image = build(tmp_path / "a.img", "--fs", "ramfs")

    quiet = osv("run", str(image), "-e", f"{BUSYBOX} echo still here")
    verbose = osv("run", str(image), "-e", f"--verbose {BUSYBOX} echo still here")

    assert quiet.returncode == verbose.returncode == 0, quiet.stderr
    assert program_output(quiet.stdout) == "still here\n"
    # As in OSv, the boot says so among its debug messages (--verbose).
    discovery = "Failed to discover the rootfs filesystem. Staying on bootfs."
    assert discovery not in quiet.stdout
    assert discovery in verbose.stdout


@needs_qemu_img
def test_an_image_compressed_by_qemu_img_boots(tmp_path: Path) -> None:
    raw = build(tmp_path / "a.img", "--fs", "ramfs", "--format", "raw")
    compressed = tmp_path / "c.qcow2"
    subprocess.run(
        [qemu_img, "convert", "-c", "-O", "qcow2", str(raw), str(compressed)],
        check=True,
    )

    result = osv("run", str(compressed), "-e", f"--rootfs=ramfs {BUSYBOX} true")

    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(rofs_installed, reason="osv-mod-rofs is installed here")
def test_building_the_default_rofs_without_its_module_names_the_pip_command(
    tmp_path: Path,
) -> None:
    result = osv("build", "-o", str(tmp_path / "x.img"), "--from-host", BUSYBOX)

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "pip install osv-mod-rofs" in result.stderr
    assert not (tmp_path / "x.img").exists()


@pytest.mark.skipif(rofs_installed, reason="osv-mod-rofs is installed here")
def test_running_a_rofs_image_without_its_module_names_the_pip_command(
    tmp_path: Path,
) -> None:
    image = tmp_path / "rofs.qcow2"
    write_image(
        image,
        cmdline=f"--rootfs=rofs {BUSYBOX}",
        descriptor=ImageDescriptor(
            kernel_version="0.1.0",
            fs_type="rofs",
            built_by="test",
            modules={"rofs": "0.1.0"},
        ),
        partition=b"\xad\xbe\xad\xde" + bytes(508),
        format="qcow2",
    )

    result = osv("run", str(image))

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "pip install osv-mod-rofs" in result.stderr
    assert "Traceback" not in result.stderr


def test_mount_fs_mounts_after_the_root_and_reports_what_fails(tmp_path: Path) -> None:
    image = build(tmp_path / "a.img", "--fs", "ramfs")

    result = osv(
        "run",
        str(image),
        "-e",
        "--rootfs=ramfs --mount-fs=ramfs,none,/data --mount-fs=nofs,x,/tmp "
        f"{BUSYBOX} cat /proc/mounts",
    )

    assert result.returncode == 0, result.stderr
    assert "created missing mount point /data" in result.stdout
    assert (
        "Failed to mount x (nofs) on /tmp: unknown file system 'nofs'; install its "
        "module with: pip install osv-mod-nofs"
    ) in result.stdout
    assert "none /data ramfs rw 0 0\n" in program_output(result.stdout)


def test_file_systems_are_unmounted_when_the_program_is_done(tmp_path: Path) -> None:
    image = build(tmp_path / "a.img", "--fs", "ramfs")

    result = subprocess.run(
        [sys.executable, "-m", "osv", "-v", "run", str(image)],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    unmounted = [
        line.split("unmounted ")[1]
        for line in result.stderr.splitlines()
        if "INFO: unmounted " in line
    ]
    assert unmounted == ["devfs from /dev", "procfs from /proc", "ramfs from /"]
