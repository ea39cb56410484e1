"""Binary layouts (struct stat, statx, statfs, linux_dirent64) match the kernel's.

The host kernel is the oracle: the same structure is fetched with a raw
system call (ctypes) and compared byte for byte with what osv.vfs packs
from the same attributes.
"""

import ctypes
import errno
import os
import struct

import pytest

from osv.vfs import (
    DT_DIR,
    DT_REG,
    O_DIRECTORY,
    O_RDONLY,
    PROC_SUPER_MAGIC,
    STATX_BASIC_STATS,
    TMPFS_MAGIC,
    FsError,
    RamFs,
    Stat,
    StatFs,
    Vfs,
    major,
    makedev,
    minor,
)

pytestmark = pytest.mark.skipif(
    os.uname().machine != "x86_64",
    reason="system-call numbers and layouts are x86-64's",
)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# x86-64 system-call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
SYS_FSTAT = 5
SYS_STATFS = 137
SYS_GETDENTS64 = 217
SYS_NEWFSTATAT = 262
SYS_STATX = 332
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
ST_VALID = 0x20


def _syscall(number: int, *args) -> int:
    result = _libc.syscall(number, *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def _kernel_stat(path: str, follow: bool = True) -> bytes:
    buf = ctypes.create_string_buffer(144)
    flags = 0 if follow else AT_SYMLINK_NOFOLLOW
    _syscall(SYS_NEWFSTATAT, AT_FDCWD, path.encode(), buf, flags)
    return buf.raw


def _stat_from_host(st: os.stat_result) -> Stat:
    return Stat(
        st_dev=st.st_dev,
        st_ino=st.st_ino,
        st_mode=st.st_mode,
        st_nlink=st.st_nlink,
        st_uid=st.st_uid,
        st_gid=st.st_gid,
        st_rdev=st.st_rdev,
        st_size=st.st_size,
        st_blksize=st.st_blksize,
        st_blocks=st.st_blocks,
        st_atime_ns=st.st_atime_ns,
        st_mtime_ns=st.st_mtime_ns,
        st_ctime_ns=st.st_ctime_ns,
    )


@pytest.fixture
def host_files(tmp_path):
    regular = tmp_path / "regular"
    regular.write_bytes(b"x" * 5000)
    os.utime(regular, ns=(1_700_000_000_123_456_789, 1_600_000_000_987_654_321))
    old = tmp_path / "old"
    old.write_bytes(b"")
    # Before 1970: Linux stores seconds -2 and 500000000 nanoseconds.
    os.utime(old, ns=(-1_500_000_000, -1_500_000_000))
    link = tmp_path / "link"
    link.symlink_to("regular")
    return {"regular": regular, "old": old, "dir": tmp_path, "link": link}


@pytest.mark.parametrize("name", ["regular", "old", "dir", "null", "link"])
def test_stat_pack_equals_kernel_struct_stat(host_files, name):
    path = "/dev/null" if name == "null" else str(host_files[name])
    follow = name != "link"
    host = os.stat(path, follow_symlinks=follow)

    kernel = _kernel_stat(path, follow)

    assert _stat_from_host(host).pack() == kernel


def test_stat_pack_places_each_field_at_its_abi_offset():
    st = Stat(
        st_dev=1,
        st_ino=2,
        st_mode=0o100644,
        st_nlink=3,
        st_uid=4,
        st_gid=5,
        st_rdev=6,
        st_size=7,
        st_blksize=8,
        st_blocks=9,
        st_atime_ns=10_000_000_011,
        st_mtime_ns=12_000_000_013,
        st_ctime_ns=14_000_000_015,
    )

    raw = st.pack()

    # Offsets from arch/x86/include/uapi/asm/stat.h (struct stat, x86-64).
    assert len(raw) == 144
    fields = {
        0: ("Q", 1),
        8: ("Q", 2),
        16: ("Q", 3),
        24: ("I", 0o100644),
        28: ("I", 4),
        32: ("I", 5),
        40: ("Q", 6),
        48: ("q", 7),
        56: ("q", 8),
        64: ("q", 9),
        72: ("q", 10),
        80: ("q", 11),
        88: ("q", 12),
        96: ("q", 13),
        104: ("q", 14),
        112: ("q", 15),
    }
    for offset, (fmt, value) in fields.items():
        assert struct.unpack_from("<" + fmt, raw, offset)[0] == value, offset
    assert raw[120:] == bytes(24)


def _kernel_statx(path: str, mask: int) -> bytes:
    buf = ctypes.create_string_buffer(256)
    _syscall(SYS_STATX, AT_FDCWD, path.encode(), 0, mask, buf)
    return buf.raw


# Fields of struct statx osv.vfs fills: (offset, size) from
# include/uapi/linux/stat.h. stx_attributes, the birth time and the
# direct-I/O fields are left out: osv.vfs does not know them.
STATX_FIELDS = {
    "stx_blksize": (4, 4),
    "stx_nlink": (16, 4),
    "stx_uid": (20, 4),
    "stx_gid": (24, 4),
    "stx_mode": (28, 2),
    "stx_ino": (32, 8),
    "stx_size": (40, 8),
    "stx_blocks": (48, 8),
    "stx_atime": (64, 12),
    "stx_ctime": (96, 12),
    "stx_mtime": (112, 12),
    "stx_rdev_major": (128, 4),
    "stx_rdev_minor": (132, 4),
    "stx_dev_major": (136, 4),
    "stx_dev_minor": (140, 4),
    "stx_mnt_id": (144, 8),
}


@pytest.mark.parametrize("name", ["regular", "old", "dir", "null"])
def test_statx_pack_equals_kernel_struct_statx(host_files, name):
    path = "/dev/null" if name == "null" else str(host_files[name])
    kernel = _kernel_statx(path, STATX_BASIC_STATS | 0x1000)
    ours = _stat_from_host(os.stat(path))
    ours.st_mnt_id = struct.unpack_from("<Q", kernel, 144)[0]

    packed = ours.pack_statx(STATX_BASIC_STATS)

    assert len(packed) == 256
    for field, (offset, size) in STATX_FIELDS.items():
        assert packed[offset : offset + size] == kernel[offset : offset + size], field
    our_mask = struct.unpack_from("<I", packed, 0)[0]
    kernel_mask = struct.unpack_from("<I", kernel, 0)[0]
    assert our_mask & STATX_BASIC_STATS == kernel_mask & STATX_BASIC_STATS


def test_statx_reserved_mask_bit_is_einval_like_the_kernel(host_files):
    with pytest.raises(OSError) as host:
        _kernel_statx(str(host_files["regular"]), 0x80000000)
    with pytest.raises(FsError) as ours:
        _stat_from_host(os.stat(host_files["regular"])).pack_statx(0x80000000)
    assert ours.value.errno == host.value.errno == errno.EINVAL


@pytest.mark.parametrize(
    ("path", "magic"),
    [("/proc", PROC_SUPER_MAGIC), ("/dev/shm", TMPFS_MAGIC), ("/dev", TMPFS_MAGIC)],
)
def test_statfs_pack_equals_kernel_struct_statfs(path, magic):
    if not os.path.ismount(path):
        pytest.skip(f"{path} is not a mount point here")
    buf = ctypes.create_string_buffer(120)
    _syscall(SYS_STATFS, path.encode(), buf)
    kernel = buf.raw
    kernel_fsid = struct.unpack_from("<Q", kernel, 56)[0]
    if path == "/dev" and struct.unpack_from("<q", kernel, 0)[0] != magic:
        pytest.skip("/dev is not devtmpfs here")
    vfs = os.statvfs(path)

    ours = StatFs(
        f_type=magic,
        f_bsize=vfs.f_bsize,
        f_blocks=vfs.f_blocks,
        f_bfree=vfs.f_bfree,
        f_bavail=vfs.f_bavail,
        f_files=vfs.f_files,
        f_ffree=vfs.f_ffree,
        f_fsid=kernel_fsid,
        f_namelen=vfs.f_namemax,
        f_frsize=vfs.f_frsize,
        f_flags=vfs.f_flag | ST_VALID,
    ).pack()

    assert ours == kernel


def test_devices_numbers_encode_like_linux():
    null = os.stat("/dev/null").st_rdev

    assert makedev(1, 3) == null == os.makedev(1, 3)
    assert (major(null), minor(null)) == (1, 3)
    big = os.makedev(0x12345, 0x6789AB)
    assert makedev(0x12345, 0x6789AB) == big
    assert (major(big), minor(big)) == (0x12345, 0x6789AB)


def _parse_dirents(buf: bytes) -> list[tuple[str, int, int, int, int]]:
    """(name, d_ino, d_off, d_reclen, d_type) of each struct linux_dirent64."""
    records = []
    offset = 0
    while offset < len(buf):
        ino, off, reclen, d_type = struct.unpack_from("<QqHB", buf, offset)
        name = buf[offset + 19 : offset + reclen].split(b"\0", 1)[0].decode()
        records.append((name, ino, off, reclen, d_type))
        offset += reclen
    return records


def _kernel_getdents(path: str, size: int) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    chunks = []
    try:
        buf = ctypes.create_string_buffer(size)
        while True:
            n = _syscall(SYS_GETDENTS64, fd, buf, size)
            if n == 0:
                return chunks
            chunks.append(buf.raw[:n])
    finally:
        os.close(fd)


NAMES = ["a", "bb", "ccc", "d" * 4, "e" * 5, "f" * 12, "g" * 13, "h" * 20, "i" * 255]


def _our_directory(names, subdir="sub"):
    vfs = Vfs()
    vfs.mount(RamFs(), "none", "/")
    vfs.mkdir("/t")
    for name in names:
        vfs.open(f"/t/{name}", 0o101, 0o644).close()
    vfs.mkdir(f"/t/{subdir}")
    return vfs


def test_getdents64_records_have_the_kernels_layout(tmp_path):
    for name in NAMES:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    vfs = _our_directory(NAMES)
    directory = vfs.open("/t", O_RDONLY | O_DIRECTORY)

    ours = _parse_dirents(directory.getdents64(65536))
    kernel = [
        r
        for chunk in _kernel_getdents(str(tmp_path), 65536)
        for r in _parse_dirents(chunk)
    ]

    # Same names, record lengths and types; inode numbers and offsets are
    # the file system's own business.
    assert sorted((n, reclen, t) for n, _, _, reclen, t in ours) == sorted(
        (n, reclen, t) for n, _, _, reclen, t in kernel
    )
    assert all(reclen % 8 == 0 for _, _, _, reclen, _ in ours)
    by_name = {n: (ino, t) for n, ino, _, _, t in ours}
    assert by_name["."] == (vfs.stat("/t").st_ino, DT_DIR)
    assert by_name[".."] == (vfs.stat("/").st_ino, DT_DIR)
    assert by_name["a"] == (vfs.stat("/t/a").st_ino, DT_REG)
    assert directory.getdents64(65536) == b""


def test_getdents64_too_small_buffer_is_einval_like_the_kernel(tmp_path):
    vfs = _our_directory(["x"])
    directory = vfs.open("/t", O_RDONLY | O_DIRECTORY)

    with pytest.raises(OSError) as host:
        _kernel_getdents(str(tmp_path), 16)
    with pytest.raises(FsError) as ours:
        directory.getdents64(16)

    assert ours.value.errno == host.value.errno == errno.EINVAL


def test_getdents64_small_buffers_return_every_entry_once():
    names = [f"file{i:03}" for i in range(100)]
    vfs = _our_directory(names)
    directory = vfs.open("/t", O_RDONLY | O_DIRECTORY)

    seen = []
    while chunk := directory.getdents64(100):
        assert len(chunk) <= 100
        seen += [name for name, *_ in _parse_dirents(chunk)]

    assert sorted(seen) == sorted(names + [".", "..", "sub"])


def test_getdents64_d_off_resumes_after_lseek():
    vfs = _our_directory(["a", "b", "c"])
    directory = vfs.open("/t", O_RDONLY | O_DIRECTORY)
    records = _parse_dirents(directory.getdents64(4096))

    # Seek to the d_off of the third record: reading resumes at the fourth.
    directory.lseek(records[2][2], os.SEEK_SET)
    resumed = _parse_dirents(directory.getdents64(4096))

    assert [r[0] for r in resumed] == [r[0] for r in records[3:]]


def test_getdents64_keeps_listing_while_entries_are_removed():
    names = [f"n{i}" for i in range(50)]
    vfs = _our_directory(names)
    directory = vfs.open("/t", O_RDONLY | O_DIRECTORY)

    removed = []
    while chunk := directory.getdents64(128):
        for name, *_ in _parse_dirents(chunk):
            if name.startswith("n"):
                vfs.unlink(f"/t/{name}")
                removed.append(name)

    assert sorted(removed) == sorted(names)
    directory.lseek(0, os.SEEK_SET)
    left = [r[0] for r in _parse_dirents(directory.getdents64(4096))]
    assert sorted(left) == [".", "..", "sub"]


def test_getdents64_on_a_file_is_enotdir():
    vfs = _our_directory(["x"])
    with pytest.raises(FsError) as err:
        vfs.open("/t/x", O_RDONLY).getdents64(4096)
    assert err.value.errno == errno.ENOTDIR
