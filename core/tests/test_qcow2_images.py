"""Images in qcow2 containers: written sparse, read and edited like raw ones, converted."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from osv.image import (
    DiskImage,
    ImageDescriptor,
    ImageError,
    Partition,
    convert_image,
    write_image,
)

MiB = 1024 * 1024

qemu_img = shutil.which("qemu-img")
needs_qemu_img = pytest.mark.skipif(
    qemu_img is None, reason="qemu-img is not installed"
)


def descriptor(**changes):
    fields = dict(
        kernel_version="0.1.0",
        fs_type="ramfs",
        built_by="test",
        modules={"example": "1.0"},
        created="2024-01-02T03:04:05Z",
    )
    fields.update(changes)
    return ImageDescriptor(**fields)


def make(path, format, partition=b"R" * MiB + b"S" * 100, **more):
    return write_image(
        path,
        cmdline="/hello world",
        descriptor=descriptor(),
        partition=partition,
        format=format,
        **more,
    )


def osv(*args):
    return subprocess.run(
        [sys.executable, "-m", "osv", *args], capture_output=True, text=True
    )


@needs_qemu_img
def test_a_qcow2_image_holds_the_same_disk_as_the_raw_one(tmp_path):
    raw, qcow2 = tmp_path / "usr.raw", tmp_path / "usr.qcow2"
    assert make(raw, "raw") == make(qcow2, "qcow2") == 2 * MiB + MiB + 512

    converted = tmp_path / "back.raw"
    subprocess.run(
        [qemu_img, "convert", "-O", "raw", str(qcow2), str(converted)], check=True
    )
    check = subprocess.run(
        [qemu_img, "check", "--output=json", str(qcow2)], capture_output=True
    )

    assert converted.read_bytes() == raw.read_bytes()
    assert check.returncode == 0, check.stdout


def test_a_qcow2_image_stores_only_what_is_not_zero(tmp_path):
    path = tmp_path / "usr.qcow2"
    make(path, "qcow2", partition=None, min_size="1G")

    with DiskImage.open(path) as image:
        assert image.format == "qcow2" and image.size == 1024 * MiB
    # Header, tables, and the clusters of the MBR and of the descriptor.
    assert os.path.getsize(path) <= 8 * 65536


def test_a_qcow2_image_opens_like_a_raw_one(tmp_path):
    path = tmp_path / "usr.qcow2"
    make(path, "qcow2")

    with DiskImage.open(path) as image:
        assert image.cmdline == "/hello world"
        assert image.descriptor == descriptor()
        assert image.partitions() == [Partition(1, 2 * MiB, MiB + 512)]
        assert image.read(2 * MiB + MiB - 2, 4) == b"RRSS"


@needs_qemu_img
def test_setting_the_command_line_of_a_qcow2_image_keeps_it_clean(tmp_path):
    path = tmp_path / "usr.qcow2"
    make(path, "qcow2")

    with DiskImage.open(path, writable=True) as image:
        image.set_cmdline("--verbose /bye")
    with DiskImage.open(path) as image:
        assert image.cmdline == "--verbose /bye"

    check = subprocess.run([qemu_img, "check", str(path)], capture_output=True)
    assert check.returncode == 0, check.stdout


def test_an_unknown_format_is_refused(tmp_path):
    with pytest.raises(ImageError, match="unknown image format 'vmdk'"):
        make(tmp_path / "x", "vmdk")


def test_a_damaged_qcow2_image_is_an_image_error(tmp_path):
    path = tmp_path / "usr.qcow2"
    make(path, "qcow2")
    data = bytearray(path.read_bytes())
    data[4:8] = (9).to_bytes(4, "big")
    path.write_bytes(data)

    with pytest.raises(ImageError, match="qcow2 version 9 is not supported"):
        DiskImage.open(path)


# ---------------------------------------------------------------------------
# Converting
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "target"), [("raw", "qcow2"), ("qcow2", "raw")])
def test_convert_between_raw_and_qcow2_keeps_every_byte(tmp_path, source, target):
    original, converted = tmp_path / f"a.{source}", tmp_path / f"b.{target}"
    make(original, source, min_size="8M")

    assert convert_image(original, converted, target) == 8 * MiB

    with DiskImage.open(original) as a, DiskImage.open(converted) as b:
        assert b.format == target
        assert a.read(0, a.size) == b.read(0, b.size)
    if target == "raw":
        # The holes stay holes.
        assert os.stat(converted).st_blocks * 512 < 4 * MiB


@needs_qemu_img
@pytest.mark.parametrize("target", ["vmdk", "vdi"])
def test_convert_to_vmdk_and_vdi_goes_through_qemu_img(tmp_path, target):
    original, converted = tmp_path / "a.qcow2", tmp_path / f"b.{target}"
    make(original, "qcow2")

    convert_image(original, converted, target)

    info = subprocess.run(
        [qemu_img, "info", "--output=json", str(converted)],
        check=True,
        capture_output=True,
        text=True,
    )
    assert json.loads(info.stdout)["format"] == target
    back = tmp_path / "back.raw"
    subprocess.run(
        [qemu_img, "convert", "-O", "raw", str(converted), str(back)], check=True
    )
    with DiskImage.open(back) as image:
        assert image.cmdline == "/hello world"


def test_convert_to_vmdk_without_qemu_img_says_what_to_install(tmp_path, monkeypatch):
    original = tmp_path / "a.qcow2"
    make(original, "qcow2")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    with pytest.raises(ImageError, match="needs qemu-img.*qemu-utils"):
        convert_image(original, tmp_path / "b.vmdk", "vmdk")
    assert not (tmp_path / "b.vmdk").exists()


def test_convert_refuses_what_is_not_an_image_and_unknown_formats(tmp_path):
    bogus = tmp_path / "bogus"
    bogus.write_bytes(b"x" * 4096)
    with pytest.raises(ImageError, match="neither a qcow2 image nor a raw OSv"):
        convert_image(bogus, tmp_path / "out", "raw")
    with pytest.raises(ImageError, match="cannot convert to 'iso'"):
        convert_image(bogus, tmp_path / "out", "iso")
    with pytest.raises(ImageError, match="must not replace its source"):
        convert_image(bogus, bogus, "raw")
    assert sorted(os.listdir(tmp_path)) == ["bogus"]


# ---------------------------------------------------------------------------
# osv image
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("format", ["raw", "qcow2"])
def test_osv_image_getargs_and_setargs_as_osv_imgedit(tmp_path, format):
    path = tmp_path / f"usr.{format}"
    make(path, format)

    assert osv("image", "getargs", str(path)).stdout == "/hello world\n"
    set_result = osv("image", "setargs", str(path), "--env=A=1", "/bin/x", "y")
    assert set_result.returncode == 0, set_result.stderr
    assert osv("image", "getargs", str(path)).stdout == "--env=A=1 /bin/x y\n"
    # One NUL after the words; what lay beyond stays, as imgedit leaves it.
    assert osv("image", "setargs", str(path), "/b").returncode == 0
    assert osv("image", "getargs", str(path)).stdout == "/b\n"
    with DiskImage.open(path) as image:
        assert image.read(512, 19) == b"/b\0nv=A=1 /bin/x y\0"


def test_osv_image_info_describes_layout_file_system_and_modules(tmp_path):
    path = tmp_path / "usr.qcow2"
    make(path, "qcow2")

    result = osv("image", "info", str(path))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [f"image: {path}", "format: qcow2"]
    assert f"disk size: {3 * MiB + 512} bytes" in lines
    assert "command line: /hello world" in lines
    assert f"  vblk0.1: {MiB + 512} bytes at {2 * MiB}" in lines
    assert "file system: ramfs" in lines
    assert "needs osv-core: 0.1.0" in lines
    assert "created: 2024-01-02T03:04:05Z" in lines
    assert (
        "  example 1.0 (installed: not installed (pip install osv-mod-example))"
        in lines
    )


def test_osv_image_convert_writes_the_other_format(tmp_path):
    path, out = tmp_path / "usr.qcow2", tmp_path / "usr.raw"
    make(path, "qcow2")

    result = osv("image", "convert", str(path), "--to", "raw", "-o", str(out))

    assert result.returncode == 0, result.stderr
    with DiskImage.open(out) as image:
        assert image.format == "raw" and image.cmdline == "/hello world"


def test_osv_image_errors_are_one_line(tmp_path):
    result = osv("image", "getargs", str(tmp_path / "absent.img"))

    assert result.returncode == 1
    assert result.stderr.startswith("osv: error: cannot open image")
    assert result.stderr.count("\n") == 1
