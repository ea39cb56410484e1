"""procfs: the /proc layout, generated at open from a provider and the mount table."""

import errno
import os
import stat

import pytest

from osv.vfs import (
    O_CREAT,
    O_DIRECTORY,
    O_RDONLY,
    O_WRONLY,
    PROC_SUPER_MAGIC,
    SEEK_CUR,
    SEEK_END,
    SEEK_SET,
    DevFs,
    FdTable,
    FsError,
    ProcFs,
    RamFs,
    Vfs,
)


class Process:
    """A small process model implementing the ProcProvider protocol."""

    def __init__(self, vfs: Vfs) -> None:
        self.vfs = vfs
        self.fds = FdTable()
        self.maps = "00400000-00401000 r-xp 00000000 00:00 0 /prog\n"
        self.name = "hello"

    def pid(self) -> int:
        return 2

    def exe_path(self) -> str:
        return "/usr/bin/prog"

    def cmdline_bytes(self) -> bytes:
        return b"prog\0--flag\0"

    def maps_text(self) -> str:
        return self.maps

    def status_text(self) -> str:
        return f"Name:\t{self.name}\nPid:\t2\nThreads:\t1\n"

    def stat_text(self) -> str:
        return f"2 ({self.name}) R 0 2 2 0 -1 0\n"

    def fd_targets(self) -> dict[int, str]:
        return {fd: self.vfs.fd_target(f) for fd, f in self.fds.items()}

    def meminfo_text(self) -> str:
        return "MemTotal:        1048576 kB\nMemFree:          524288 kB\n"

    def cpuinfo_text(self) -> str:
        return "processor\t: 0\nmodel name\t: OSv vCPU\n\n"

    def hostname(self) -> str:
        return "osv.local"


@pytest.fixture
def world():
    vfs = Vfs()
    vfs.register_filesystem(RamFs())
    vfs.register_filesystem(DevFs())
    vfs.register_filesystem(ProcFs())
    vfs.mount("ramfs", "none", "/")
    for path in ("/dev", "/proc", "/usr", "/usr/bin"):
        vfs.mkdir(path)
    f = vfs.open("/usr/bin/prog", O_CREAT | O_WRONLY, 0o755)
    f.write(b"\x7fELF")
    f.close()
    vfs.mount("devfs", "none", "/dev")
    process = Process(vfs)
    vfs.mount("procfs", "none", "/proc", provider=process)
    return vfs, process


def _read(vfs, path) -> bytes:
    f = vfs.open(path, O_RDONLY)
    data = b""
    while chunk := f.read(7):
        data += chunk
    f.close()
    return data


def _errno(call, *args) -> int:
    with pytest.raises(FsError) as err:
        call(*args)
    return err.value.errno


def test_proc_self_is_a_link_to_the_pid_directory(world):
    vfs, _ = world

    assert vfs.readlink("/proc/self") == "2"
    assert vfs.resolve("/proc/self") is vfs.resolve("/proc/2")
    assert vfs.realpath(vfs.resolve("/proc/self/fd")) == "/proc/2/fd"
    assert _errno(vfs.stat, "/proc/3") == errno.ENOENT


def test_proc_self_exe_leads_to_the_program(world):
    vfs, _ = world

    assert vfs.readlink("/proc/self/exe") == "/usr/bin/prog"
    assert _read(vfs, "/proc/self/exe") == b"\x7fELF"
    assert stat.S_ISLNK(vfs.stat("/proc/self/exe", follow=False).st_mode)


def test_process_files_come_from_the_provider(world):
    vfs, process = world

    assert _read(vfs, "/proc/self/cmdline") == b"prog\0--flag\0"
    assert _read(vfs, "/proc/self/maps") == process.maps.encode()
    assert _read(vfs, "/proc/self/status").startswith(b"Name:\thello\n")
    assert _read(vfs, "/proc/self/stat") == b"2 (hello) R 0 2 2 0 -1 0\n"
    assert _read(vfs, "/proc/meminfo").startswith(b"MemTotal:")
    assert _read(vfs, "/proc/cpuinfo").startswith(b"processor\t: 0\n")
    assert _read(vfs, "/proc/sys/kernel/hostname") == b"osv.local\n"


def test_content_is_fixed_at_open(world):
    vfs, process = world
    f = vfs.open("/proc/self/maps", O_RDONLY)
    process.maps = "changed\n"

    assert f.read(1000) == b"00400000-00401000 r-xp 00000000 00:00 0 /prog\n"
    assert _read(vfs, "/proc/self/maps") == b"changed\n"


def test_proc_files_seek_like_seq_files(world):
    vfs, _ = world
    f = vfs.open("/proc/self/cmdline", O_RDONLY)

    assert f.lseek(5, SEEK_SET) == 5
    assert f.read(100) == b"--flag\0"
    assert f.lseek(-2, SEEK_CUR) == 10
    assert f.pread(4, 0) == b"prog"
    assert f.fstat().st_size == 0
    # maps, like every seq_file of Linux, has no end to seek from.
    assert (
        _errno(vfs.open("/proc/self/maps", O_RDONLY).lseek, 0, SEEK_END) == errno.EINVAL
    )


def test_proc_self_fd_links_follow_the_fd_table(world):
    vfs, process = world
    process.fds.install(vfs.open("/dev/null", O_RDONLY))
    process.fds.install(vfs.open("/usr/bin/prog", O_RDONLY))
    process.fds.install(vfs.open("/proc/self/fd", O_RDONLY | O_DIRECTORY), fd=7)

    names = [name for name, _, _ in vfs.resolve("/proc/self/fd").readdir()]
    assert names == ["0", "1", "7"]
    assert vfs.readlink("/proc/self/fd/0") == "/dev/null"
    assert vfs.readlink("/proc/self/fd/7") == "/proc/2/fd"
    assert _read(vfs, "/proc/self/fd/1") == b"\x7fELF"

    process.fds.close(1)
    assert _errno(vfs.readlink, "/proc/self/fd/1") == errno.ENOENT


def test_proc_mounts_lists_the_mount_table(world):
    vfs, _ = world
    vfs.mkdir("/tmp")
    vfs.mount("ramfs", "none", "/tmp", readonly=True)

    text = _read(vfs, "/proc/mounts").decode()

    assert text.splitlines() == [
        "none / ramfs rw 0 0",
        "none /dev devfs rw 0 0",
        "none /proc procfs rw 0 0",
        "none /tmp ramfs ro 0 0",
    ]
    assert _read(vfs, "/proc/self/mounts").decode() == text
    assert (
        _read(vfs, "/proc/filesystems")
        == b"nodev\tramfs\nnodev\tdevfs\nnodev\tprocfs\n"
    )


def test_proc_is_read_only_in_linuxs_ways(world):
    vfs, _ = world

    # Linux: creating is ENOENT, removing EPERM, writing an entry EIO.
    assert _errno(vfs.mkdir, "/proc/new") == errno.ENOENT
    assert _errno(vfs.open, "/proc/new", O_CREAT | O_WRONLY, 0o644) == errno.ENOENT
    assert _errno(vfs.unlink, "/proc/meminfo") == errno.EPERM
    writer = vfs.open("/proc/meminfo", O_WRONLY)
    assert _errno(writer.write, b"x") == errno.EIO
    assert _errno(vfs.open, "/proc/self/fd/0/", O_RDONLY) == errno.ENOENT


def test_proc_reports_procfs_statfs_and_directory_entries(world):
    vfs, _ = world

    assert vfs.statfs("/proc/self").f_type == PROC_SUPER_MAGIC
    root_names = {name for name, _, _ in vfs.resolve("/proc").readdir()}
    assert {"self", "2", "mounts", "meminfo", "cpuinfo", "sys"} <= root_names
    assert vfs.stat("/proc/2").st_ino == vfs.stat("/proc/self/.").st_ino
    assert vfs.stat("/proc/self/fd").st_mode & 0o777 == 0o500
    assert stat.S_ISREG(vfs.stat("/proc/meminfo").st_mode)
    assert vfs.resolve("/proc/self/fd/../..") is vfs.resolve("/proc")


def test_procfs_without_a_provider_cannot_mount():
    vfs = Vfs()
    vfs.mount(RamFs(), "none", "/")

    assert _errno(vfs.mount, ProcFs(), "none", "/") == errno.EINVAL


def test_host_proc_agrees_on_the_shape_we_copy():
    # The facts the tests above assume about Linux, checked on the host.
    assert os.readlink("/proc/self") == str(os.getpid())
    assert os.stat("/proc/meminfo").st_size == 0
    assert stat.S_ISLNK(os.lstat("/proc/self/exe").st_mode)
    fd = os.open("/proc/self/maps", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as err:
            os.lseek(fd, 0, os.SEEK_END)
        assert err.value.errno == errno.EINVAL
    finally:
        os.close(fd)
    with pytest.raises(OSError) as err:
        os.mkdir("/proc/osv-test-new")
    assert err.value.errno == errno.ENOENT


def test_procfs_for_kernel_asks_the_kernel_for_its_provider():
    vfs = Vfs()
    vfs.mount(RamFs(), "none", "/")
    vfs.mkdir("/proc")

    class Kernel:
        def proc_info(self):
            return Process(vfs)

    vfs.mount(ProcFs.for_kernel(Kernel()), "none", "/proc")

    assert vfs.readlink("/proc/self/exe") == "/usr/bin/prog"
