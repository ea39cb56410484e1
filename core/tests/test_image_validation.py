"""Damaged, truncated and foreign images are refused up front, in one clear line."""

import errno
import os
import shutil
import struct
import subprocess
import sys

import pytest

from osv.block import (
    BlockError,
    Qcow2Disk,
    Qcow2Error,
    Qcow2Header,
    detect_format,
    open_disk,
)
from osv.image import (
    DESCRIPTOR_OFFSET,
    DiskImage,
    ImageDescriptor,
    ImageError,
    ManifestError,
    _manifest,
    convert_image,
    manifest_from_paths,
    write_image,
)

MiB = 1024 * 1024
CLUSTER = 64 * 1024
ROOT_ENTRY = 0x1BE + 16  # MBR entry index 1, the root partition

qemu_img = shutil.which("qemu-img")
needs_qemu_img = pytest.mark.skipif(
    qemu_img is None, reason="qemu-img is not installed"
)
cc = shutil.which("cc")


def descriptor():
    return ImageDescriptor(
        kernel_version="0.1.0",
        fs_type="rofs",
        built_by="test",
        modules={"rofs": "1.0"},
        created="2024-01-02T03:04:05Z",
    )


def pattern(size):
    block = bytes((i * 7) % 251 + 1 for i in range(4093))
    return (block * (size // len(block) + 1))[:size]


def make(path, format="qcow2", partition=None):
    write_image(
        path,
        cmdline="/hello",
        descriptor=descriptor(),
        partition=pattern(300 * 1024) if partition is None else partition,
        format=format,
    )
    return path


def osv(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "osv", *args], capture_output=True, text=True, **kwargs
    )


def assert_one_line_error(result, *needles):
    assert result.returncode == 1, result
    assert result.stderr.startswith("osv: error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def l2_entry_offset(path, guest_cluster):
    """Where in the file the L2 entry of ``guest_cluster`` lies (L1 entry 0)."""
    data = path.read_bytes()
    header = Qcow2Header.parse(data[:112], "t")
    (l1_entry,) = struct.unpack_from(">Q", data, header.l1_table_offset)
    table = l1_entry & 0x00FF_FFFF_FFFF_FE00
    assert table, "the image has no L2 table"
    return table + 8 * guest_cluster


def set_u64(path, offset, value, fmt=">Q"):
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path.write_bytes(data)


def qemu_check_errors(path):
    result = subprocess.run([qemu_img, "check", str(path)], capture_output=True)
    return result.returncode


# ---------------------------------------------------------------------------
# qcow2: every cluster the tables name must be in the file
# ---------------------------------------------------------------------------

# The root partition starts at 2 MiB: guest cluster 32 holds its first bytes.
ROOT_CLUSTER = 2 * MiB // CLUSTER


def test_a_data_cluster_past_the_end_of_the_file_is_refused_by_name(tmp_path):
    path = make(tmp_path / "usr.qcow2")
    set_u64(path, l2_entry_offset(path, ROOT_CLUSTER), (1 << 63) | 0x1000_0000)

    with pytest.raises(ImageError) as caught:
        DiskImage.open(path)

    message = str(caught.value)
    assert f"guest cluster {ROOT_CLUSTER} (disk offset 0x200000)" in message
    assert "is stored at 0x10000000, past the end of the file" in message
    assert message.endswith("the image is truncated or corrupt")
    if qemu_img:
        # qemu-img check calls it corruption too (QEMU itself reads zeros).
        assert qemu_check_errors(path) != 0


@pytest.mark.parametrize("missing", [CLUSTER, 1], ids=["one cluster", "one byte"])
def test_a_qcow2_image_cut_short_is_refused(tmp_path, missing):
    path = make(tmp_path / "usr.qcow2")
    size = os.path.getsize(path)
    os.truncate(path, size - missing)

    with pytest.raises(ImageError, match="past the end of the file .*truncated"):
        DiskImage.open(path)
    with pytest.raises(Qcow2Error, match="truncated or corrupt"):
        Qcow2Disk.open(path)


def test_osv_image_info_and_run_refuse_a_truncated_image_in_one_line(tmp_path):
    path = make(tmp_path / "usr.qcow2")
    os.truncate(path, os.path.getsize(path) - CLUSTER)

    for command in (("image", "info"), ("run",)):
        result = osv(*command, str(path))
        assert_one_line_error(result, "past the end of the file", "truncated")
        assert result.stdout == ""


def test_a_file_that_shrinks_while_open_is_a_read_error_not_zeros(tmp_path):
    path = make(tmp_path / "usr.qcow2")
    with open_disk(path) as disk:
        assert disk.read(2 * MiB, 4096) == pattern(4096)
        os.truncate(path, 4 * CLUSTER)

        with pytest.raises(Qcow2Error, match="past the end of the file"):
            disk.read(2 * MiB, 4096)


def test_an_l2_table_past_the_end_of_the_file_is_refused(tmp_path):
    path = make(tmp_path / "usr.qcow2")
    header = Qcow2Header.parse(path.read_bytes()[:112], "t")
    set_u64(path, header.l1_table_offset, (1 << 63) | 0x40_0000)

    with pytest.raises(Qcow2Error, match=r"L2 table at 0x400000 lies past the end"):
        open_disk(path)


def test_compressed_data_past_the_end_of_the_file_is_refused(tmp_path):
    path = make(tmp_path / "usr.qcow2")
    set_u64(path, l2_entry_offset(path, ROOT_CLUSTER), (1 << 62) | 0x1000_0000)

    with pytest.raises(Qcow2Error, match="compressed data of guest cluster 32"):
        open_disk(path)


@needs_qemu_img
def test_images_we_write_and_edit_pass_the_check_and_qemu_img_check(tmp_path):
    path = make(tmp_path / "usr.qcow2")
    with DiskImage.open(path, writable=True) as image:
        image.set_cmdline("/bye")
    with Qcow2Disk.open(path) as disk:
        disk.check()

    assert qemu_check_errors(path) == 0


# ---------------------------------------------------------------------------
# qcow2: reserved bits and the compression type
# ---------------------------------------------------------------------------


def test_reserved_bits_in_an_l1_entry_are_refused(tmp_path):
    path = make(tmp_path / "usr.qcow2")
    header = Qcow2Header.parse(path.read_bytes()[:112], "t")
    (entry,) = struct.unpack_from(">Q", path.read_bytes(), header.l1_table_offset)
    set_u64(path, header.l1_table_offset, entry | 1)

    with pytest.raises(ImageError, match=r"L1 entry 0 \(0x8.*1\) has reserved bits"):
        DiskImage.open(path)


@pytest.mark.parametrize("bit", [1, 8, 56, 61])
def test_reserved_bits_in_an_l2_entry_are_refused(tmp_path, bit):
    path = make(tmp_path / "usr.qcow2")
    offset = l2_entry_offset(path, ROOT_CLUSTER)
    (entry,) = struct.unpack_from(">Q", path.read_bytes(), offset)
    set_u64(path, offset, entry | (1 << bit))

    with pytest.raises(
        Qcow2Error, match=f"L2 entry of guest cluster {ROOT_CLUSTER} .* reserved bits"
    ):
        open_disk(path)


@needs_qemu_img
def test_the_zero_flag_is_a_reserved_bit_in_a_version_2_image(tmp_path):
    raw = make(tmp_path / "usr.raw", format="raw")
    path = tmp_path / "v2.qcow2"
    subprocess.run(
        [qemu_img, "convert", "-O", "qcow2", "-o", "compat=0.10", raw, path],
        check=True,
    )
    DiskImage.open(path).close()
    offset = l2_entry_offset(path, ROOT_CLUSTER)
    (entry,) = struct.unpack_from(">Q", path.read_bytes(), offset)
    set_u64(path, offset, entry | 1)

    with pytest.raises(Qcow2Error, match="reserved bits"):
        open_disk(path)


def _with_header(path, **fields):
    data = bytearray(path.read_bytes())
    header = Qcow2Header.parse(bytes(data[:112]), "t")
    compression_type = fields.pop("compression_type", None)
    for name, value in fields.items():
        setattr(header, name, value)
    data[:104] = header.pack()
    if compression_type is not None:
        data[104] = compression_type
    path.write_bytes(data)


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"incompatible_features": 8, "header_length": 104}, "no compression_type"),
        ({"incompatible_features": 8, "header_length": 112}, "compression_type 0"),
        ({"header_length": 112, "compression_type": 1}, "without incompatible"),
        (
            {"incompatible_features": 8, "header_length": 112, "compression_type": 1},
            "zstd",
        ),
        (
            {"incompatible_features": 8, "header_length": 112, "compression_type": 7},
            "unknown compression type 7",
        ),
    ],
    ids=["bit without field", "bit with zlib", "type without bit", "zstd", "unknown"],
)
def test_compression_type_fields_qemu_refuses_are_refused(tmp_path, fields, complaint):
    path = make(tmp_path / "usr.qcow2")
    _with_header(path, **fields)

    with pytest.raises(Qcow2Error, match=complaint):
        open_disk(path)
    if qemu_img and complaint != "zstd":
        # QEMU refuses these headers too (zstd it can read).
        info = subprocess.run([qemu_img, "info", str(path)], capture_output=True)
        assert info.returncode != 0


# ---------------------------------------------------------------------------
# Raw images and the MBR
# ---------------------------------------------------------------------------


def test_a_raw_image_cut_inside_its_partition_is_refused_as_truncated(tmp_path):
    path = make(tmp_path / "usr.raw", format="raw")
    os.truncate(path, 2 * MiB + 1000)

    with pytest.raises(ImageError, match="runs past the end of the image .*truncated"):
        DiskImage.open(path)


def edit_root_entry(path, field, value):
    """Change one field of MBR entry index 1: its LBA start, its sector count,
    its system id, or the whole 16 bytes."""
    data = bytearray(path.read_bytes())
    if field == "start":
        struct.pack_into("<I", data, ROOT_ENTRY + 8, value)
    elif field == "sectors":
        struct.pack_into("<I", data, ROOT_ENTRY + 12, value)
    elif field == "system_id":
        data[ROOT_ENTRY + 4] = value
    else:
        data[ROOT_ENTRY : ROOT_ENTRY + 16] = value
    path.write_bytes(data)


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("entry", bytes(16), "no root partition \\(entry index 1 is not in use\\)"),
        ("system_id", 0, "no root partition"),
        ("sectors", 0xFFFFFFFF, "runs past the end of the image"),
        ("start", 0, "at 0\\) overlaps the MBR, command line and descriptor"),
        ("start", 8, "at 4096\\) overlaps the MBR"),
        ("start", DESCRIPTOR_OFFSET // 512, "overlaps the MBR"),
        ("start", 0xFFFFFFFF, "runs past the end of the image"),
    ],
    ids=["zeroed", "type 0", "huge size", "sector 0", "sector 8", "descriptor", "far"],
)
def test_a_damaged_root_partition_entry_is_refused(tmp_path, field, value, complaint):
    path = make(tmp_path / "usr.raw", format="raw")
    edit_root_entry(path, field, value)

    with pytest.raises(ImageError, match=complaint):
        DiskImage.open(path)


def test_overlapping_partitions_are_refused(tmp_path):
    path = make(tmp_path / "usr.raw", format="raw")
    data = bytearray(path.read_bytes())
    # Entry index 2 copies index 1 but starts one sector later.
    data[ROOT_ENTRY + 16 : ROOT_ENTRY + 32] = data[ROOT_ENTRY : ROOT_ENTRY + 16]
    struct.pack_into("<I", data, ROOT_ENTRY + 16 + 8, 2 * MiB // 512 + 1)
    struct.pack_into("<I", data, ROOT_ENTRY + 16 + 12, 1)
    path.write_bytes(data)

    with pytest.raises(ImageError, match="partitions 1 and 2 overlap"):
        DiskImage.open(path)


def test_an_unused_entry_is_ignored_as_osv_ignores_it(tmp_path):
    # Entry index 0 with system id 0 is not in use, whatever its LBA fields say.
    path = make(tmp_path / "usr.raw", format="raw")
    data = bytearray(path.read_bytes())
    struct.pack_into("<II", data, 0x1BE + 8, 0, 0xFFFFFFFF)
    path.write_bytes(data)

    with DiskImage.open(path) as image:
        assert [p.index for p in image.partitions()] == [1]


# ---------------------------------------------------------------------------
# What is not an image at all
# ---------------------------------------------------------------------------


def test_a_qcow2_image_with_a_damaged_magic_is_neither_qcow2_nor_raw(tmp_path):
    path = make(tmp_path / "usr.qcow2")
    data = bytearray(path.read_bytes())
    data[0] = 0
    path.write_bytes(data)

    result = osv("image", "info", str(path))

    assert_one_line_error(
        result,
        "neither a qcow2 image nor a raw OSv image",
        f"no image descriptor at byte {DESCRIPTOR_OFFSET}",
    )
    assert "too small" not in result.stderr


@pytest.mark.parametrize(
    ("format", "head", "name"),
    [
        ("vmdk", b"KDMV" + bytes(508), "VMDK"),
        ("vmdk", b"# Disk DescriptorFile\nversion=1\n", "VMDK"),
        (
            "vdi",
            b"<<< Oracle VM VirtualBox Disk Image >>>\n".ljust(64, b"\0")
            + b"\x7f\x10\xda\xbe"
            + bytes(444),
            "VDI",
        ),
        ("vhdx", b"vhdxfile" + bytes(504), "VHDX"),
    ],
)
def test_containers_of_other_virtualisers_are_named_and_a_conversion_suggested(
    tmp_path, format, head, name
):
    path = tmp_path / f"disk.{format}"
    path.write_bytes(head)

    assert detect_format(path) == format
    with pytest.raises(BlockError, match=f"a {name} image; only raw and qcow2"):
        open_disk(path)
    result = osv("run", str(path))
    assert_one_line_error(
        result,
        f"a {name} image, which osv does not run",
        f"osv image convert {path} --to qcow2",
    )


@needs_qemu_img
@pytest.mark.parametrize("format", ["vmdk", "vdi"])
def test_a_vmdk_or_vdi_image_converts_back_to_one_osv_runs(tmp_path, format):
    raw = make(tmp_path / "usr.raw", format="raw")
    foreign = tmp_path / f"usr.{format}"
    subprocess.run([qemu_img, "convert", "-O", format, raw, foreign], check=True)
    back = tmp_path / "back.qcow2"

    result = osv("image", "convert", str(foreign), "--to", "qcow2", "-o", str(back))

    assert result.returncode == 0, result.stderr
    with DiskImage.open(back) as image:
        assert image.cmdline == "/hello"
        assert image.read(2 * MiB, 4096) == pattern(4096)


@needs_qemu_img
def test_a_vmdk_that_holds_no_osv_image_is_not_converted(tmp_path):
    junk = tmp_path / "junk.raw"
    junk.write_bytes(bytes(3 * MiB))
    foreign = tmp_path / "junk.vmdk"
    subprocess.run([qemu_img, "convert", "-O", "vmdk", junk, foreign], check=True)

    with pytest.raises(ImageError, match="the VMDK disk is not an OSv image"):
        convert_image(foreign, tmp_path / "out.qcow2", "qcow2")
    assert sorted(os.listdir(tmp_path)) == ["junk.raw", "junk.vmdk"]


# ---------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------


def test_a_directory_given_as_the_output_is_refused_before_any_work(tmp_path):
    source = make(tmp_path / "usr.qcow2")
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(ImageError, match=f"the output {out} is a directory"):
        write_image(out, cmdline="/x", descriptor=descriptor(), partition=None)
    with pytest.raises(ImageError, match="is a directory"):
        convert_image(source, out, "raw")
    for command in (
        ("build", "-o", str(out), "--from-host", sys.executable),
        ("image", "convert", str(source), "--to", "raw", "-o", str(out)),
        ("image", "convert", str(source), "--to", "vmdk", "-o", str(out)),
        ("mkfs", "-o", str(out), str(tmp_path)),
    ):
        assert_one_line_error(osv(*command), f"the output {out} is a directory")
    # Nothing was left behind, here or in the parent directory.
    assert os.listdir(out) == []
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".osv-")]


def test_a_special_file_given_as_the_output_is_not_replaced(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(fifo)

    for target in (fifo, link):
        with pytest.raises(ImageError, match="exists and is not a regular file"):
            write_image(target, cmdline="/x", descriptor=descriptor(), partition=None)
    assert (tmp_path / "fifo").is_fifo() and link.is_symlink()


def test_an_output_in_a_missing_directory_is_refused(tmp_path):
    target = tmp_path / "absent" / "usr.img"

    with pytest.raises(ImageError, match="the directory .*absent does not exist"):
        write_image(target, cmdline="/x", descriptor=descriptor(), partition=None)


@pytest.mark.parametrize("fs", ["ramfs", "devfs", "procfs"])
def test_mkfs_of_a_built_in_file_system_says_there_is_nothing_to_make(tmp_path, fs):
    result = osv("mkfs", "--fs", fs, "-o", str(tmp_path / "y"), str(tmp_path))

    assert_one_line_error(result, f"{fs} has no on-disk format to make")
    assert "pip install" not in result.stderr
    if fs == "ramfs":
        assert "osv build --fs ramfs" in result.stderr


# ---------------------------------------------------------------------------
# A reader that goes away
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [("image", "info"), ("image", "getargs"), ("--version",)]
)
def test_a_closed_standard_output_ends_quietly_with_status_141(tmp_path, command):
    path = make(tmp_path / "usr.qcow2")
    args = command if command[0].startswith("-") else (*command, str(path))
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "osv", *args],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(writer)

    assert result.stderr == ""
    assert result.returncode == 141


# ---------------------------------------------------------------------------
# --from-host
# ---------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="no /proc")
def test_a_path_on_a_pseudo_file_system_is_refused(tmp_path):
    with pytest.raises(ManifestError, match="/proc/self is on the proc file system"):
        manifest_from_paths(["/proc/self"])
    assert_one_line_error(
        osv(
            "build",
            "-o",
            str(tmp_path / "x.img"),
            "--fs",
            "ramfs",
            "--from-host",
            "/proc",
        ),
        "/proc is on the proc file system mounted at /proc",
    )


def test_a_pseudo_file_system_inside_a_tree_is_skipped_with_a_warning(
    tmp_path, monkeypatch, caplog
):
    tree = tmp_path / "root"
    (tree / "proc" / "1").mkdir(parents=True)
    (tree / "proc" / "1" / "status").write_text("made up\n")
    (tree / "etc").mkdir()
    (tree / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    mounts = {"/": "ext4", str(tree / "proc"): "proc"}
    monkeypatch.setattr(_manifest, "host_mounts", lambda: mounts)

    entries = manifest_from_paths([tree])

    guests = [entry.guest for entry in entries]
    assert f"{tree}/etc/hosts" in guests
    assert not [guest for guest in guests if guest.startswith(f"{tree}/proc")]
    assert f"skipping {tree}/proc: a proc file system" in caplog.text


def test_the_mount_table_is_read_with_its_escapes(tmp_path, monkeypatch):
    table = tmp_path / "mounts"
    table.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        "proc /proc proc rw 0 0\n"
        "tmpfs /mnt/with\\040space tmpfs rw 0 0\n"
    )
    monkeypatch.setattr(_manifest, "_MOUNT_TABLE", str(table))

    assert _manifest.host_mounts() == {
        "/": "ext4",
        "/proc": "proc",
        "/mnt/with space": "tmpfs",
    }


def test_a_symlink_that_cannot_be_read_is_named_in_the_error(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "cwd").symlink_to("/somewhere")
    real_readlink = os.readlink

    def readlink(path, *args, **kwargs):
        if os.fspath(path).endswith("/cwd"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_readlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "readlink", readlink)

    with pytest.raises(ManifestError) as caught:
        manifest_from_paths([tree])
    assert str(caught.value) == (
        f"<from-host>:1: cannot read the symlink {tree}/cwd: Permission denied"
    )


@pytest.mark.skipif(cc is None, reason="no C compiler")
def test_a_library_found_through_origin_dot_dot_gets_a_plain_guest_path(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "bin").mkdir()
    (tmp_path / "x.c").write_text("int x(void) { return 1; }\n")
    (tmp_path / "main.c").write_text("int x(void);\nint main(void) { return x(); }\n")
    library, program = tmp_path / "lib" / "libx.so", tmp_path / "bin" / "prog"
    subprocess.run(
        [cc, "-shared", "-fPIC", "-o", library, tmp_path / "x.c"], check=True
    )
    subprocess.run(
        [
            cc,
            "-o",
            program,
            tmp_path / "main.c",
            f"-L{tmp_path / 'lib'}",
            "-lx",
            "-Wl,-rpath,$ORIGIN/../lib",
        ],
        check=True,
    )

    entries = manifest_from_paths([program])

    guests = {entry.guest: entry.host for entry in entries}
    assert guests[str(library)] == str(library)
