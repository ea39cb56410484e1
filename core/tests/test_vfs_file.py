"""Open files on ramfs: positions, appends, holes, seeking, times, references.

Where Linux's behaviour is the question, the same calls run on a host file
(in tmpfs when the host has /dev/shm, the closest kin of ramfs) and the
results must agree.
"""

import errno
import os
import shutil
import struct
import time

import pytest

from osv.vfs import (
    FIONREAD,
    O_APPEND,
    O_CREAT,
    O_DIRECTORY,
    O_PATH,
    O_RDONLY,
    O_RDWR,
    O_TRUNC,
    O_WRONLY,
    SEEK_CUR,
    SEEK_DATA,
    SEEK_END,
    SEEK_HOLE,
    SEEK_SET,
    UTIME_NOW,
    UTIME_OMIT,
    File,
    FsError,
    RamFs,
    Vfs,
)


@pytest.fixture
def vfs():
    vfs = Vfs()
    vfs.mount(RamFs(), "none", "/")
    return vfs


@pytest.fixture
def host_dir(tmp_path_factory):
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        path = os.path.join(shm, f"osv-vfs-test-{os.getpid()}-{time.monotonic_ns()}")
        os.mkdir(path)
        yield path
        shutil.rmtree(path)
    else:
        yield str(tmp_path_factory.mktemp("host"))


def _errno(call, *args) -> str:
    try:
        call(*args)
    except (FsError, OSError) as err:
        return errno.errorcode[err.errno]
    return "ok"


class HostFile:
    """A host fd with the File method names, to run one script on both."""

    def __init__(self, path: str, flags: int, mode: int = 0o644) -> None:
        self.fd = os.open(path, flags, mode)

    def read(self, n):
        return os.read(self.fd, n)

    def write(self, data):
        return os.write(self.fd, data)

    def pread(self, n, offset):
        return os.pread(self.fd, n, offset)

    def pwrite(self, data, offset):
        return os.pwrite(self.fd, data, offset)

    def lseek(self, offset, whence):
        return os.lseek(self.fd, offset, whence)

    def truncate(self, size):
        os.ftruncate(self.fd, size)

    def size(self):
        return os.fstat(self.fd).st_size

    def close(self):
        os.close(self.fd)


class OurFile:
    def __init__(self, vfs, path, flags, mode=0o644) -> None:
        self.file = vfs.open(path, flags, mode)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def size(self):
        return self.file.fstat().st_size


SCRIPTS = {
    "write_then_read": [
        ("write", b"hello world"),
        ("lseek", 0, SEEK_SET),
        ("read", 5),
        ("read", 100),
        ("read", 100),
    ],
    "append_ignores_position": [
        ("write", b"abc"),
        ("lseek", 0, SEEK_SET),
        ("write", b"def"),
        ("lseek", 0, SEEK_CUR),
        ("pread", 10, 0),
    ],
    "pwrite_under_append_appends": [
        ("write", b"0123456789"),
        ("pwrite", b"XY", 2),
        ("pread", 20, 0),
        ("lseek", 0, SEEK_CUR),
    ],
    "holes_read_as_zeros": [
        ("lseek", 10, SEEK_SET),
        ("write", b"end"),
        ("pread", 20, 0),
        ("truncate", 20),
        ("pread", 30, 8),
        ("truncate", 4),
        ("pread", 30, 0),
        ("truncate", 100000),
        ("pread", 4, 99998),
        ("pwrite", b"Z", 50000),
        ("pread", 3, 49999),
    ],
    "pread_pwrite_keep_position": [
        ("write", b"abcdef"),
        ("pwrite", b"XY", 1),
        ("pread", 3, 0),
        ("lseek", 0, SEEK_CUR),
        ("pread", 3, 100),
    ],
    "seek_modes": [
        ("write", b"x" * 100),
        ("lseek", -10, SEEK_END),
        ("lseek", 5, SEEK_CUR),
        ("lseek", 1000, SEEK_SET),
        ("lseek", -1, SEEK_SET),
        ("lseek", -2000, SEEK_CUR),
        ("lseek", 0, SEEK_DATA),
        ("lseek", 99, SEEK_DATA),
        ("lseek", 100, SEEK_DATA),
        ("lseek", 0, SEEK_HOLE),
        ("lseek", 100, SEEK_HOLE),
        ("lseek", -1, SEEK_DATA),
        ("lseek", 0, 7),
    ],
    "ftruncate_negative": [("truncate", -1)],
}


def _run(file, script):
    results = []
    for op, *args in script:
        try:
            result = getattr(file, op)(*args)
        except (FsError, OSError) as err:
            result = errno.errorcode[err.errno]
        results.append((op, result))
    results.append(("size", file.size()))
    return results


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_file_script_matches_linux(vfs, host_dir, name):
    flags = O_RDWR | O_CREAT | (O_APPEND if "append" in name else 0)
    host = HostFile(os.path.join(host_dir, name), flags)
    ours = OurFile(vfs, f"/{name}", flags)
    try:
        assert _run(ours, SCRIPTS[name]) == _run(host, SCRIPTS[name])
    finally:
        host.close()


@pytest.mark.parametrize(
    ("flags", "op"),
    [
        (O_WRONLY, "read"),
        (O_RDONLY, "write"),
        (O_PATH, "read"),
        (O_PATH, "write"),
        (O_PATH, "lseek"),
        (O_RDONLY, "ftruncate"),
        (O_PATH, "ftruncate"),
        (O_PATH, "fsync"),
    ],
)
def test_access_mode_errors_match_linux(vfs, host_dir, flags, op):
    path = os.path.join(host_dir, "f")
    with open(path, "wb") as f:
        f.write(b"data")
    host_fd = os.open(path, flags)
    _ours_setup = vfs.open("/f", O_CREAT | O_WRONLY, 0o644)
    _ours_setup.write(b"data")
    ours = vfs.open("/f", flags)
    calls = {
        "read": (lambda: os.read(host_fd, 1), lambda: ours.read(1)),
        "write": (lambda: os.write(host_fd, b"x"), lambda: ours.write(b"x")),
        "lseek": (lambda: os.lseek(host_fd, 0, 0), lambda: ours.lseek(0, 0)),
        "ftruncate": (lambda: os.ftruncate(host_fd, 0), lambda: ours.truncate(0)),
        "fsync": (lambda: os.fsync(host_fd), lambda: ours.fsync()),
    }
    host_call, our_call = calls[op]
    try:
        assert _errno(our_call) == _errno(host_call) != "ok"
    finally:
        os.close(host_fd)


def test_directory_reads_and_seeks_match_linux_tmpfs(vfs, host_dir):
    if not host_dir.startswith("/dev/shm"):
        pytest.skip("directory seeking differs between file systems; needs tmpfs")
    host_fd = os.open(host_dir, os.O_RDONLY | os.O_DIRECTORY)
    vfs.mkdir("/d")
    ours = vfs.open("/d", O_RDONLY | O_DIRECTORY)
    try:
        assert _errno(ours.read, 1) == _errno(os.read, host_fd, 1) == "EISDIR"
        assert _errno(ours.lseek, 0, SEEK_END) == _errno(os.lseek, host_fd, 0, SEEK_END)
        assert _errno(ours.lseek, 0, SEEK_DATA) == _errno(
            os.lseek, host_fd, 0, SEEK_DATA
        )
        assert ours.lseek(1, SEEK_SET) == os.lseek(host_fd, 1, SEEK_SET)
        assert ours.lseek(1, SEEK_CUR) == os.lseek(host_fd, 1, SEEK_CUR)
    finally:
        os.close(host_fd)


def test_readinto_fills_guest_memory_directly_and_zero_fills_holes(vfs):
    f = vfs.open("/f", O_CREAT | O_RDWR, 0o644)
    f.write(b"abc")
    f.truncate(8)
    memory = bytearray(b"\xff" * 16)

    f.lseek(1, SEEK_SET)
    n = f.readinto(memoryview(memory)[2:12])

    assert n == 7
    assert bytes(memory) == b"\xff\xffbc\0\0\0\0\0" + b"\xff" * 7
    assert f.position == 8
    assert f.preadinto(memoryview(memory), 100) == 0


def test_write_accepts_memoryviews_of_guest_memory(vfs):
    f = vfs.open("/f", O_CREAT | O_RDWR, 0o644)
    guest = bytearray(b"0123456789")

    assert f.write(memoryview(guest)[3:7]) == 4
    assert f.pwrite(memoryview(guest)[:2], 10) == 2

    assert f.pread(100, 0) == b"3456" + bytes(6) + b"01"


def test_truncate_grows_without_storing_the_hole(vfs):
    f = vfs.open("/big", O_CREAT | O_RDWR, 0o644)

    f.truncate(1 << 40)

    st = f.fstat()
    assert st.st_size == 1 << 40
    assert st.st_blocks == 0
    assert f.pread(4, (1 << 40) - 4) == bytes(4)
    f.truncate(0)
    assert f.pread(4, 0) == b""


def test_a_removed_file_stays_readable_through_open_files(vfs):
    writer = vfs.open("/f", O_CREAT | O_RDWR, 0o644)
    writer.write(b"survives")

    vfs.unlink("/f")

    assert writer.fstat().st_nlink == 0
    assert writer.pread(100, 0) == b"survives"
    assert _errno(vfs.stat, "/f") == "ENOENT"


def test_writes_move_mtime_and_ctime_but_not_atime(vfs):
    f = vfs.open("/f", O_CREAT | O_RDWR, 0o644)
    before = f.fstat()
    time.sleep(0.001)

    f.write(b"x")
    after = f.fstat()

    assert after.st_mtime_ns > before.st_mtime_ns
    assert after.st_ctime_ns == after.st_mtime_ns
    assert after.st_atime_ns == before.st_atime_ns


def test_o_trunc_stamps_mtime_even_on_an_empty_file(vfs):
    vfs.open("/f", O_CREAT | O_WRONLY, 0o644).close()
    before = vfs.stat("/f").st_mtime_ns
    time.sleep(0.001)

    vfs.open("/f", O_WRONLY | O_TRUNC).close()

    assert vfs.stat("/f").st_mtime_ns > before


def test_namespace_changes_stamp_the_directory_and_the_inode(vfs):
    vfs.mkdir("/d")
    vfs.open("/d/f", O_CREAT | O_WRONLY, 0o644).close()
    dir_before = vfs.stat("/d")
    file_before = vfs.stat("/d/f")
    time.sleep(0.001)

    vfs.link("/d/f", "/d/g")

    dir_after = vfs.stat("/d")
    file_after = vfs.stat("/d/g")
    assert dir_after.st_mtime_ns > dir_before.st_mtime_ns
    assert file_after.st_ctime_ns > file_before.st_ctime_ns
    assert file_after.st_mtime_ns == file_before.st_mtime_ns
    assert file_after.st_nlink == 2


def test_utimens_sets_omits_and_stamps_now(vfs):
    vfs.open("/f", O_CREAT | O_WRONLY, 0o644).close()

    vfs.utimens("/f", (1_000_000_000_123, 2_000_000_000_456))
    st = vfs.stat("/f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000_123, 2_000_000_000_456)

    now = time.time_ns()
    vfs.utimens("/f", (UTIME_OMIT, UTIME_NOW))
    st = vfs.stat("/f")
    assert st.st_atime_ns == 1_000_000_000_123
    assert st.st_mtime_ns >= now
    assert st.st_ctime_ns >= now


def test_directory_nlink_counts_subdirectories_like_linux(vfs, host_dir):
    ops = [
        ("mkdir", "a"),
        ("mkdir", "a/b"),
        ("mkdir", "a/c"),
        ("mkdir", "z"),
        ("rename", "a/c", "z/c"),
        ("rmdir", "a/b"),
    ]
    for op, *args in ops:
        getattr(os, op)(*(os.path.join(host_dir, a) for a in args))
        getattr(vfs, op)(*("/" + a for a in args))

    for name in ("a", "z", "z/c"):
        assert (
            vfs.stat("/" + name).st_nlink
            == os.stat(os.path.join(host_dir, name)).st_nlink
        )


def test_fionread_reports_bytes_left(vfs):
    f = vfs.open("/f", O_CREAT | O_RDWR, 0o644)
    f.write(b"x" * 10)
    f.lseek(3, SEEK_SET)

    assert f.ioctl(FIONREAD, 0) == struct.pack("<i", 7)
    assert _errno(f.ioctl, 0x5401, 0) == "ENOTTY"
    assert not f.isatty()


def test_open_file_holds_a_reference_per_holder_and_releases_once(vfs):
    released = []

    class Tracked(File):
        def release(self) -> None:
            released.append(self)

    vnode = vfs.open("/f", O_CREAT | O_WRONLY, 0o644).vnode
    f = Tracked(vnode, O_RDONLY, "/f")

    f.acquire()
    f.close()
    assert released == [] and not f.closed
    f.close()
    assert released == [f] and f.closed
    f.close()
    assert released == [f]


def test_file_flags_keep_status_flags_only(vfs):
    f = vfs.open("/f", O_CREAT | O_RDWR | O_TRUNC | 0o2000000, 0o644)

    assert f.flags == O_RDWR
    f.set_status_flags(O_APPEND | O_WRONLY | O_DIRECTORY)
    assert f.flags == O_RDWR | O_APPEND


def test_a_shared_file_is_viewed_without_a_copy_until_it_is_written(vfs):
    image = memoryview(b"\x7fELF and the rest")
    node = vfs.resolve("/").create("shared", 0o755)
    node.share(image)

    view = node.contents_view()
    assert view is not None and view.obj is image.obj
    assert bytes(view) == b"\x7fELF and the rest"

    f = vfs.open("/shared", O_RDWR)
    f.write(b"XXXX")
    # The file has storage of its own now; the view still shows the image.
    assert node.contents_view() is None
    assert bytes(view) == b"\x7fELF and the rest"
    assert vfs.open("/shared", O_RDWR).read(8) == b"XXXX and"
