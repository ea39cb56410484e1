"""The block layer: raw and memory disks, MBR partitions as devices, /dev/vblk* nodes."""

import errno
import os
import stat
import struct

import pytest

import osv.block
from osv.block import (
    BlockDeviceNode,
    BlockError,
    MemoryDisk,
    Partition,
    RawDisk,
    block_device_node,
    check_partitions,
    detect_format,
    disk_devices,
    open_disk,
    read_partition_table,
)
from osv.image import ImageDescriptor, write_image
from osv.vfs import DevFs, FsError, Vfs

MiB = 1024 * 1024


def descriptor():
    return ImageDescriptor(
        kernel_version="0.1.0",
        fs_type="rofs",
        built_by="test",
        modules={},
        created="2024-01-02T03:04:05Z",
    )


def mbr(*entries):
    """A sector holding an MBR with the given (index, system id, cs word, lba, n)."""
    sector = bytearray(512)
    sector[510:] = b"\x55\xaa"
    for index, system_id, start_cs, lba, sectors in entries:
        struct.pack_into(
            "<BBHBBHII", sector, 0x1BE + 16 * index, 0, 0, start_cs, system_id, 0, 0,
            lba, sectors,
        )  # fmt: skip
    return bytes(sector)


# ---------------------------------------------------------------------------
# Devices and their bounds
# ---------------------------------------------------------------------------


def test_raw_disk_reads_and_writes_its_file(tmp_path):
    path = tmp_path / "disk.raw"
    path.write_bytes(bytes(range(256)) * 16)

    with RawDisk.open(path, writable=True) as disk:
        assert disk.size == 4096 and disk.format == "raw" and not disk.readonly
        assert disk.read(250, 10) == bytes(range(250, 256)) + bytes(range(4))
        assert disk.write(100, b"hello") == 5
        buffer = bytearray(7)
        assert disk.readinto(99, buffer) == 7
        assert buffer == b"chello\x69"

    assert path.read_bytes()[100:105] == b"hello"


@pytest.mark.parametrize(
    ("offset", "size"), [(-1, 1), (4096, 1), (4000, 97), (0, 4097)]
)
def test_reads_and_writes_outside_a_device_are_refused_and_touch_nothing(
    tmp_path, offset, size
):
    path = tmp_path / "disk.raw"
    path.write_bytes(b"x" * 4096)

    with RawDisk.open(path, writable=True) as disk:
        with pytest.raises(BlockError, match="outside the device"):
            disk.read(offset, size)
        with pytest.raises(BlockError, match="outside the device"):
            disk.write(offset, b"y" * max(size, 0))

    assert path.read_bytes() == b"x" * 4096


def test_a_read_only_device_refuses_writes(tmp_path):
    path = tmp_path / "disk.raw"
    path.write_bytes(bytes(512))

    with RawDisk.open(path) as disk, pytest.raises(BlockError, match="read-only"):
        disk.write(0, b"x")
    with pytest.raises(BlockError, match="read-only"):
        MemoryDisk(bytes(512)).write(0, b"x")


def test_a_raw_file_that_shrinks_gives_a_block_error_not_short_data(tmp_path):
    path = tmp_path / "disk.raw"
    path.write_bytes(bytes(8192))

    with RawDisk.open(path) as disk:
        os.truncate(path, 1000)
        with pytest.raises(BlockError, match="short read"):
            disk.read(4096, 512)


def test_memory_disk_is_writable_when_asked():
    disk = MemoryDisk(bytes(1024), readonly=False, name="vblk3")

    disk.write(1000, b"abcd")

    assert disk.read(998, 8) == b"\0\0abcd\0\0"
    assert repr(disk) == "<MemoryDisk vblk3 1024 bytes rw>"


def test_partition_is_a_bounded_window_named_after_its_disk():
    disk = MemoryDisk(bytes(1024) + b"P" * 512 + bytes(512), readonly=False)
    partition = Partition(disk, 1, 1024, 512)

    assert partition.name == "vblk0.1"
    assert partition.read(0, 512) == b"P" * 512
    partition.write(510, b"zz")
    assert disk.read(1534, 2) == b"zz"
    with pytest.raises(BlockError, match="outside the device"):
        partition.read(500, 13)


def test_partition_reaching_past_its_disk_is_refused():
    with pytest.raises(BlockError, match="runs past the end of the disk"):
        Partition(MemoryDisk(bytes(1024)), 1, 512, 1024)


# ---------------------------------------------------------------------------
# The partition table, read as OSv's kernel reads it
# ---------------------------------------------------------------------------


def test_partition_table_takes_entries_with_a_system_id_and_a_sector():
    sector = mbr(
        (0, 0x83, 0x0002, 4, 2),  # used
        (1, 0x00, 0x0002, 6, 2),  # no system id: unused
        (2, 0x83, 0x0040, 8, 2),  # sector field 0: unused
        (3, 0x0C, 0x0001, 10, 2),  # used
    )
    disk = MemoryDisk(sector + bytes(6 * 512))

    entries = read_partition_table(disk)

    assert [(e.index, e.system_id, e.start, e.size) for e in entries] == [
        (0, 0x83, 2048, 1024),
        (3, 0x0C, 5120, 1024),
    ]


def test_a_disk_without_the_mbr_signature_has_no_partitions():
    sector = bytearray(mbr((1, 0x83, 2, 1, 1)))
    sector[511] = 0

    assert read_partition_table(MemoryDisk(bytes(sector) + bytes(512))) == []
    assert read_partition_table(MemoryDisk(b"tiny")) == []


def test_disk_devices_names_the_disk_and_each_partition_as_osv():
    sector = mbr((1, 0x83, 2, 2, 2), (2, 0x83, 2, 4, 1))
    disk = MemoryDisk(sector + bytes(512) + b"A" * 1024 + b"B" * 512)

    devices = disk_devices(disk)

    assert list(devices) == ["vblk0", "vblk0.1", "vblk0.2"]
    assert devices["vblk0.1"].read(0, 1024) == b"A" * 1024
    assert devices["vblk0.2"].read(0, 512) == b"B" * 512


def test_a_partition_past_the_end_of_the_disk_is_an_error():
    disk = MemoryDisk(mbr((1, 0x83, 2, 1, 100)) + bytes(512))

    with pytest.raises(BlockError, match="runs past the end"):
        disk_devices(disk)
    with pytest.raises(BlockError, match="runs past the end"):
        check_partitions(disk)


@pytest.mark.parametrize("format", ["raw", "qcow2"])
def test_an_image_root_partition_is_vblk0_1_from_2_mib(tmp_path, format):
    path = tmp_path / f"usr.{format}"
    write_image(
        path,
        cmdline="/hello",
        descriptor=descriptor(),
        partition=b"ROOT" * 300,
        format=format,
    )

    assert detect_format(path) == format
    with open_disk(path) as disk:
        devices = disk_devices(disk)
        assert disk.format == format
        assert list(devices) == ["vblk0", "vblk0.1"]
        root = devices["vblk0.1"]
        assert (root.start, root.size) == (2 * MiB, 1536)
        assert root.read(0, 1200) == b"ROOT" * 300
        assert root.read(1200, 336) == bytes(336)


def test_open_disk_reports_a_missing_file_as_a_block_error(tmp_path):
    with pytest.raises(BlockError, match="No such file"):
        open_disk(tmp_path / "absent.img")


# ---------------------------------------------------------------------------
# /dev/vblk* nodes
# ---------------------------------------------------------------------------


def _dev(devices):
    devfs = DevFs()
    for minor, (name, device) in enumerate(devices.items()):
        devfs.add_device(name, block_device_node(device, minor))
    vfs = Vfs()
    vfs.mount(devfs, "none", "/")
    return vfs


def test_block_device_nodes_are_block_special_files_with_the_device_size():
    disk = MemoryDisk(mbr((1, 0x83, 2, 1, 2)) + b"data" * 256)
    vfs = _dev(disk_devices(disk))

    st = vfs.stat("/vblk0.1")

    assert stat.S_ISBLK(st.st_mode)
    assert st.st_size == 1024
    assert os.major(st.st_rdev) == 253 and os.minor(st.st_rdev) == 1
    assert isinstance(vfs.resolve("/vblk0"), BlockDeviceNode)


def test_reading_a_block_device_node_follows_the_file_offset_and_stops_at_its_end():
    disk = MemoryDisk(bytes(range(256)) * 4, name="vblk0")
    vfs = _dev({"vblk0": disk})

    file = vfs.open("/vblk0", os.O_RDONLY)
    assert file.read(4) == bytes([0, 1, 2, 3])
    assert file.read(4) == bytes([4, 5, 6, 7])
    assert file.lseek(-2, os.SEEK_END) == 1022
    assert file.read(100) == bytes([254, 255])
    assert file.read(100) == b""
    view = memoryview(bytearray(3))
    assert file.preadinto(view, 255) == 3
    assert view.tobytes() == bytes([255, 0, 1])


def test_writing_a_node_of_a_read_only_device_is_erofs():
    vfs = _dev({"vblk0": MemoryDisk(bytes(1024))})

    file = vfs.open("/vblk0", os.O_RDWR)

    with pytest.raises(FsError) as caught:
        file.write(b"x")
    assert caught.value.errno == errno.EROFS


def test_writing_a_node_of_a_writable_device_reaches_the_device():
    disk = MemoryDisk(bytes(1024), readonly=False)
    vfs = _dev({"vblk0": disk})

    file = vfs.open("/vblk0", os.O_RDWR)
    file.lseek(1020, os.SEEK_SET)

    assert file.write(b"abcdefgh") == 4
    assert disk.read(1020, 4) == b"abcd"
    with pytest.raises(FsError) as caught:
        file.write(b"x")
    assert caught.value.errno == errno.ENOSPC


def test_block_package_exports_exactly_its_public_api():
    assert sorted(osv.block.__all__) == sorted(
        name for name in vars(osv.block) if not name.startswith("_")
    )
