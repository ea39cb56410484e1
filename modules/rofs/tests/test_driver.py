"""The ROFS driver as programs see it through the VFS: reads, listings, links, errors."""

import errno
import logging
import os
import stat

import pytest

from osv.block import MemoryDisk
from osv.vfs import DT_DIR, DT_LNK, DT_REG, FsError, RamFs, Vfs
from osv_mod_rofs import SEGMENT_SIZE, RoFs, RofsMount, RofsMountError

CONTENT = bytes((i * 7 + 3) % 256 for i in range(200_000))


@pytest.fixture
def image(tree):
    return tree.image(
        {
            "/hello": b"Hello, world!\n",
            "/etc/hosts": b"127.0.0.1 localhost osv.local\n",
            "/etc/empty": b"",
            "/usr/lib/big": CONTENT,
            "/usr/lib/libc.so": "->big",
            "/lib": "->/usr/lib",
            "/data": None,
        }
    )


@pytest.fixture
def vfs(image, mount):
    return mount(image)


def dirents(vfs, path):
    """(name, ino, d_type) as getdents64 gives them, . and .. included."""
    file = vfs.open(path, os.O_RDONLY | os.O_DIRECTORY)
    data = file.getdents64(65536)
    entries, position = [], 0
    while position < len(data):
        ino = int.from_bytes(data[position : position + 8], "little")
        length = int.from_bytes(data[position + 16 : position + 18], "little")
        d_type = data[position + 18]
        name = data[position + 19 : position + length].split(b"\0")[0]
        entries.append((name.decode(), ino, d_type))
        position += length
    return entries


def test_files_read_back_exactly(vfs, read_all):
    assert read_all(vfs, "/hello") == b"Hello, world!\n"
    assert read_all(vfs, "/etc/hosts") == b"127.0.0.1 localhost osv.local\n"
    assert read_all(vfs, "/etc/empty") == b""
    assert read_all(vfs, "/usr/lib/big") == CONTENT


@pytest.mark.parametrize(
    ("offset", "size"),
    [(0, 1), (1, 32767), (32767, 2), (65536, 65536), (199_990, 100), (300_000, 9)],
)
def test_reads_at_any_offset_match_the_content(vfs, offset, size):
    file = vfs.open("/usr/lib/big", os.O_RDONLY)
    view = memoryview(bytearray(size))

    count = file.preadinto(view, offset)

    assert view[:count].tobytes() == CONTENT[offset : offset + size]


def test_sequential_reads_move_the_file_position(vfs):
    file = vfs.open("/usr/lib/big", os.O_RDONLY)
    pieces = []
    while piece := file.read(12_345):
        pieces.append(piece)
    assert b"".join(pieces) == CONTENT


def test_readdir_lists_dot_dotdot_and_the_entries_in_order(vfs):
    root = vfs.stat("/").st_ino
    etc = vfs.stat("/etc").st_ino

    assert dirents(vfs, "/") == [
        (".", root, DT_DIR),
        ("..", root, DT_DIR),
        ("hello", vfs.stat("/hello").st_ino, DT_REG),
        ("etc", etc, DT_DIR),
        ("usr", vfs.stat("/usr").st_ino, DT_DIR),
        ("lib", vfs.stat("/lib", follow=False).st_ino, DT_LNK),
        ("data", vfs.stat("/data").st_ino, DT_DIR),
    ]
    assert [name for name, _, _ in dirents(vfs, "/etc")] == [
        ".",
        "..",
        "hosts",
        "empty",
    ]
    assert dirents(vfs, "/etc")[1] == ("..", root, DT_DIR)
    assert dirents(vfs, "/data") == [
        (".", vfs.stat("/data").st_ino, DT_DIR),
        ("..", root, DT_DIR),
    ]


def test_symlinks_are_read_and_followed(vfs, read_all):
    assert vfs.readlink("/lib") == "/usr/lib"
    assert vfs.readlink("/usr/lib/libc.so") == "big"
    assert read_all(vfs, "/lib/libc.so") == CONTENT
    with pytest.raises(FsError) as caught:
        vfs.readlink("/hello")
    assert caught.value.errno == errno.EINVAL


def test_attributes_are_as_osv_reports_them(vfs):
    hello = vfs.stat("/hello")
    assert hello.st_mode == stat.S_IFREG | 0o555
    assert hello.st_size == 14
    assert hello.st_nlink == 1
    assert hello.st_blocks == 1
    assert hello.st_ino == 2
    assert (hello.st_uid, hello.st_gid, hello.st_mtime_ns) == (0, 0, 0)

    root = vfs.stat("/")
    assert root.st_mode == stat.S_IFDIR | 0o555
    assert root.st_ino == 1
    assert root.st_size == 32
    assert root.st_nlink == 2 + 3  # etc, usr and data

    link = vfs.stat("/lib", follow=False)
    assert link.st_mode == stat.S_IFLNK | 0o555
    assert link.st_size == len("/usr/lib")


def test_statfs_is_what_osv_reports(vfs, image):
    from osv_mod_rofs import Superblock

    superblock = Superblock.unpack(image)
    statfs = vfs.statfs("/etc/hosts")

    assert statfs.f_bsize == 512
    assert statfs.f_blocks == (
        superblock.structure_info_first_block + superblock.structure_info_blocks_count
    )
    assert (statfs.f_bfree, statfs.f_bavail, statfs.f_ffree) == (0, 0, 0)
    assert statfs.f_files == superblock.inodes_count == 11
    assert statfs.f_namelen == 0
    assert statfs.f_type == 0xDEADBEAD
    assert statfs.f_flags & 1  # ST_RDONLY


def test_missing_names_and_non_directories_fail_as_on_linux(vfs):
    for path, code in [
        ("/nothing", errno.ENOENT),
        ("/etc/nothing", errno.ENOENT),
        ("/hello/x", errno.ENOTDIR),
    ]:
        with pytest.raises(FsError) as caught:
            vfs.stat(path)
        assert caught.value.errno == code, path


@pytest.mark.parametrize(
    "change",
    [
        lambda vfs: vfs.open("/hello", os.O_WRONLY),
        lambda vfs: vfs.open("/hello", os.O_RDWR),
        lambda vfs: vfs.open("/new", os.O_WRONLY | os.O_CREAT),
        lambda vfs: vfs.open("/hello", os.O_RDONLY | os.O_TRUNC),
        lambda vfs: vfs.mkdir("/etc/new", 0o755),
        lambda vfs: vfs.rmdir("/data"),
        lambda vfs: vfs.unlink("/hello"),
        lambda vfs: vfs.rename("/hello", "/bye"),
        lambda vfs: vfs.symlink("/x", "/link"),
        lambda vfs: vfs.link("/hello", "/hello2"),
        lambda vfs: vfs.truncate("/hello", 0),
        lambda vfs: vfs.chmod("/hello", 0o777),
        lambda vfs: vfs.chown("/hello", 1, 1),
        lambda vfs: vfs.utimens("/hello"),
        lambda vfs: vfs.resolve("/hello").write(0, b"x"),
        lambda vfs: vfs.resolve("/hello").truncate(0),
        lambda vfs: vfs.resolve("/hello").setattr(mode=0o600),
        lambda vfs: vfs.resolve("/etc").create("x", 0o100644),
    ],
)
def test_every_change_is_refused_with_erofs(vfs, change):
    with pytest.raises(FsError) as caught:
        change(vfs)
    assert caught.value.errno == errno.EROFS


def test_reads_are_cached_in_32_kib_segments(tree, mount):
    image = tree.image({"/big": CONTENT, "/small": b"s" * 100})
    vfs = mount(image)
    rofs = vfs.resolve("/big").mount
    assert isinstance(rofs, RofsMount) and SEGMENT_SIZE == 32768

    file = vfs.open("/big", os.O_RDONLY)
    assert file.pread(10, 40_000) == CONTENT[40_000:40_010]
    assert rofs.stats["misses"] == 1 and rofs.stats["blocks_read"] == 64
    assert file.pread(100, 33_000) == CONTENT[33_000:33_100]
    assert rofs.stats["hits"] == 1 and rofs.stats["blocks_read"] == 64

    # One read missing several segments reads them from the device at once.
    assert file.pread(200_000, 0) == CONTENT
    assert rofs.stats["misses"] == 7  # segments 0, 2, 3, 4, 5, 6 (the short last)
    assert rofs.stats["hits"] == 2  # segment 1 again
    assert rofs.stats["blocks_cached"] == -(-200_000 // 512)
    assert file.pread(200_000, 0) == CONTENT
    assert rofs.stats["hits"] == 2 + 7 and rofs.stats["misses"] == 7

    # A small file is read whole on its first read.
    assert vfs.open("/small", os.O_RDONLY).pread(1, 50) == b"s"
    assert rofs.stats["blocks_cached"] == -(-200_000 // 512) + 1


def test_without_the_cache_reads_go_to_the_device_each_time(tree, mount):
    vfs = mount(tree.image({"/big": CONTENT}), options="cache=off")
    rofs = vfs.resolve("/big").mount
    file = vfs.open("/big", os.O_RDONLY)

    for _ in range(3):
        assert file.pread(1000, 5000) == CONTENT[5000:6000]

    assert rofs.stats["blocks_cached"] == 0
    assert rofs.stats["blocks_read"] == 3 * 2  # 1000 bytes at 5000: two blocks


def test_unmount_reports_the_cache_diagnostics(tree, caplog, mount, read_all):
    vfs = Vfs()
    vfs.mount(RamFs(), "none", "/")
    vfs.mkdir("/rofs", 0o755)
    mount(tree.image({"/a": b"x" * 5000}), vfs=vfs, mountpoint="/rofs")
    assert read_all(vfs, "/rofs/a") == b"x" * 5000
    read_all(vfs, "/rofs/a")

    with caplog.at_level(logging.INFO, logger="osv_mod_rofs"):
        vfs.umount("/rofs")

    assert "10 blocks read, 10 blocks cached, cache hit ratio 50.0%" in caplog.text


def test_mount_options_other_than_the_cache_switch_are_refused(image, mount):
    with pytest.raises(FsError) as caught:
        mount(image, options="cache=maybe")
    assert caught.value.errno == errno.EINVAL
    mount(image, options="ro,defaults,cache=on")


def test_a_missing_device_is_enxio(image, mount):
    fs = RoFs({"vblk0.1": MemoryDisk(image)})

    with pytest.raises(FsError) as caught:
        Vfs().mount(fs, "/dev/vblk1.1", "/", readonly=True)
    assert caught.value.errno == errno.ENXIO


def test_a_kernel_gives_the_type_its_block_devices(image, mount, read_all):
    class Kernel:
        block_devices = {"vblk0.1": MemoryDisk(image)}

    fs = RoFs.for_kernel(Kernel())
    vfs = Vfs()
    vfs.mount(fs, "/dev/vblk0.1", "/", readonly=True)

    assert read_all(vfs, "/hello") == b"Hello, world!\n"
    assert RoFs.for_kernel(object()).devices == {}


def test_a_device_without_rofs_fails_the_mount_clearly(mount):
    with pytest.raises(RofsMountError, match="no ROFS here") as caught:
        mount(bytes(4096))
    assert caught.value.errno == errno.EINVAL


def test_the_mount_is_always_read_only(image, mount):
    vfs = Vfs()
    vfs.mount(RoFs({"d": MemoryDisk(image)}), "d", "/", readonly=False)

    assert vfs.resolve("/").mount.readonly


def test_stat_gives_the_host_times_kept_in_the_time_table(tree, mount, tmp_path):
    image = tree.image({"/x": b"data", "/y": b"more"}, times=True)
    # The Tree fixture wrote host1 and host2 just now: their times must come
    # back exactly, to the nanosecond.
    vfs = mount(image)
    assert vfs.stat("/x").st_mtime_ns == os.stat(tmp_path / "host1").st_mtime_ns
    assert vfs.stat("/y").st_mtime_ns == os.stat(tmp_path / "host2").st_mtime_ns


def test_without_a_time_table_objects_are_dated_at_the_epoch(tree, mount):
    vfs = mount(tree.image({"/x": b"data"}))
    assert vfs.stat("/x").st_mtime_ns == 0
