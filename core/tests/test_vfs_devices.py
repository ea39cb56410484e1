"""devfs devices and the console, checked against the host's own devices and ttys."""

import errno
import fcntl
import os
import stat
import struct
import termios
import threading

import pytest

from osv.vfs import (
    O_CREAT,
    O_NONBLOCK,
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
    POLLIN,
    POLLOUT,
    SEEK_SET,
    TCGETS,
    TCSETS,
    TIOCGWINSZ,
    Console,
    ConsoleFile,
    DevFs,
    DeviceVnode,
    FsError,
    RamFs,
    Vfs,
    makedev,
)


def _errno(call, *args) -> int:
    with pytest.raises(FsError) as err:
        call(*args)
    return err.value.errno


def _vfs(devfs: DevFs) -> Vfs:
    vfs = Vfs()
    vfs.mount(RamFs(), "none", "/")
    vfs.mkdir("/dev")
    vfs.mount(devfs, "none", "/dev")
    return vfs


@pytest.fixture
def pipes():
    """Host pipes standing in for the terminal: (console, feed_fd, drain_fd)."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    console = Console(input_fd=in_r, output_fd=out_w)
    yield console, in_w, out_r
    console.close()
    for fd in (in_r, in_w, out_r, out_w):
        os.close(fd)


@pytest.mark.parametrize("name", ["null", "zero", "random", "urandom"])
def test_memory_devices_have_the_hosts_type_and_numbers(name):
    vfs = _vfs(DevFs())
    host = os.stat(f"/dev/{name}")

    ours = vfs.stat(f"/dev/{name}")

    assert stat.S_ISCHR(ours.st_mode)
    assert ours.st_rdev == host.st_rdev
    assert ours.st_mode & 0o777 == 0o666


def test_null_zero_and_urandom_read_and_write_like_linux():
    vfs = _vfs(DevFs())
    null = vfs.open("/dev/null", O_RDWR)
    zero = vfs.open("/dev/zero", O_RDWR)
    urandom = vfs.open("/dev/urandom", O_RDONLY)
    memory = bytearray(b"\xff" * 8)

    assert null.read(100) == b""
    assert null.write(b"gone") == 4
    assert zero.read(5) == bytes(5)
    assert zero.readinto(memoryview(memory)) == 8 and memory == bytes(8)
    assert zero.write(b"x" * 10) == 10
    assert len(urandom.read(64)) == 64
    assert urandom.read(32) != urandom.read(32)
    # A shell's "> /dev/null" opens with O_CREAT|O_TRUNC: the device stays.
    vfs.open("/dev/null", O_WRONLY | O_CREAT | 0o1000, 0o666).close()
    assert stat.S_ISCHR(vfs.stat("/dev/null").st_mode)


def test_devfs_lists_devices_and_takes_new_ones_while_mounted():
    devfs = DevFs()
    vfs = _vfs(devfs)

    class Full(DeviceVnode):
        def write(self, offset, data):
            raise FsError(errno.ENOSPC, "device full")

    devfs.add_device("full", lambda mount, ino: Full(mount, ino, makedev(1, 7)))

    names = [name for name, _, _ in vfs.resolve("/dev").readdir()]
    assert names == [
        "null", "zero", "random", "urandom", "fd", "stdin", "stdout", "stderr", "full"
    ]  # fmt: skip
    assert _errno(vfs.open("/dev/full", O_WRONLY).write, b"x") == errno.ENOSPC
    assert _errno(devfs.add_device, "full", lambda m, i: Full(m, i, 0)) == errno.EEXIST
    assert _errno(devfs.add_device, "a/b", lambda m, i: Full(m, i, 0)) == errno.EINVAL
    devfs.remove_device("full")
    assert _errno(vfs.stat, "/dev/full") == errno.ENOENT
    assert _errno(devfs.remove_device, "full") == errno.ENOENT


def test_dev_fd_and_the_standard_streams_link_into_proc_self_fd():
    vfs = _vfs(DevFs())
    links = {name: vfs.resolve(f"/dev/{name}", follow=False) for name in
             ("fd", "stdin", "stdout", "stderr")}  # fmt: skip
    assert {name: link.readlink() for name, link in links.items()} == {
        "fd": "/proc/self/fd",
        "stdin": "/proc/self/fd/0",
        "stdout": "/proc/self/fd/1",
        "stderr": "/proc/self/fd/2",
    }
    assert all(link.is_symlink for link in links.values())


def test_devfs_refuses_new_files_and_directories():
    vfs = _vfs(DevFs())

    assert _errno(vfs.open, "/dev/new", O_CREAT | O_WRONLY, 0o644) == errno.EPERM
    assert _errno(vfs.mkdir, "/dev/pts") == errno.EPERM
    assert _errno(vfs.unlink, "/dev/null") == errno.EPERM
    assert vfs.resolve("/dev/..") is vfs.root


def test_console_nodes_appear_when_a_console_is_attached(pipes):
    console, _, _ = pipes
    vfs = _vfs(DevFs())
    assert _errno(vfs.stat, "/dev/console") == errno.ENOENT

    vfs.mount(DevFs(), "none", "/dev", console=console)

    assert vfs.stat("/dev/console").st_rdev == makedev(5, 1)
    assert vfs.stat("/dev/tty").st_rdev == os.stat("/dev/tty").st_rdev
    assert isinstance(vfs.open("/dev/tty", O_RDWR), ConsoleFile)


def test_console_passes_bytes_between_guest_and_host(pipes):
    console, feed, drain = pipes
    vfs = _vfs(DevFs(console))
    stdin = vfs.open("/dev/console", O_RDONLY)
    stdout = vfs.open("/dev/console", O_WRONLY)
    memory = bytearray(16)

    os.write(feed, b"typed\n")
    assert stdin.read(100) == b"typed\n"
    os.write(feed, b"more")
    assert stdin.readinto(memoryview(memory)) == 4 and memory[:4] == b"more"
    assert stdout.write(b"printed\n") == 8
    assert os.read(drain, 100) == b"printed\n"
    assert _errno(stdin.write, b"x") == errno.EBADF
    assert _errno(stdout.read, 1) == errno.EBADF


def test_console_is_not_seekable_and_not_a_tty_on_pipes(pipes):
    console, _, _ = pipes
    f = DevFs(console)
    vfs = _vfs(f)
    tty = vfs.open("/dev/tty", O_RDWR)

    assert _errno(tty.lseek, 0, SEEK_SET) == errno.ESPIPE
    assert _errno(tty.pread, 1, 0) == errno.ESPIPE
    assert _errno(tty.pwrite, b"x", 0) == errno.ESPIPE
    assert not tty.isatty()
    assert _errno(tty.ioctl, TCGETS, 0) == errno.ENOTTY
    assert _errno(tty.ioctl, TIOCGWINSZ, 0) == errno.ENOTTY
    assert _errno(tty.ioctl, 0x1234, 0) == errno.ENOTTY


def test_console_end_of_input_and_nonblocking_reads(pipes):
    console, feed, _ = pipes
    vfs = _vfs(DevFs(console))
    nonblocking = vfs.open("/dev/console", O_RDONLY | O_NONBLOCK)

    assert _errno(nonblocking.read, 10) == errno.EAGAIN
    assert nonblocking.poll_ready(POLLIN | POLLOUT) == POLLOUT
    os.write(feed, b"x")
    assert nonblocking.poll_ready(POLLIN) == POLLIN
    assert nonblocking.read(10) == b"x"
    console_eof = Console(input_fd=os.open("/dev/null", os.O_RDONLY), output_fd=1)
    try:
        assert console_eof.read(10) == b""
    finally:
        os.close(console_eof.input_fd)


def test_console_writes_everything_to_a_full_nonblocking_host_pipe(pipes):
    console, _, drain = pipes
    os.set_blocking(console.output_fd, False)
    payload = os.urandom(1 << 20)
    received = bytearray()

    def reader():
        while len(received) < len(payload):
            received.extend(os.read(drain, 65536))

    thread = threading.Thread(target=reader)
    thread.start()
    assert console.write(payload) == len(payload)
    thread.join(timeout=30)

    assert bytes(received) == payload


def test_console_output_can_be_redirected_to_a_host_file(tmp_path, pipes):
    console, _, _ = pipes
    target = tmp_path / "out.txt"

    console.redirect_output(target)
    console.write(b"to the file\n")
    console.close()

    assert target.read_bytes() == b"to the file\n"


@pytest.fixture
def pty():
    leader, follower = os.openpty()
    yield leader, follower
    os.close(leader)
    os.close(follower)


def test_console_on_a_host_terminal_answers_terminal_ioctls(pty):
    leader, follower = pty
    fcntl.ioctl(leader, termios.TIOCSWINSZ, struct.pack("<4H", 42, 132, 0, 0))
    console = Console(input_fd=follower, output_fd=follower)
    vfs = _vfs(DevFs(console))
    tty = vfs.open("/dev/tty", O_RDWR)

    assert tty.isatty()
    assert tty.ioctl(TCGETS, 0) == fcntl.ioctl(follower, termios.TCGETS, bytes(36))
    rows, cols, _, _ = struct.unpack("<4H", tty.ioctl(TIOCGWINSZ, 0))
    assert (rows, cols) == (42, 132)


def test_terminal_settings_changed_by_the_guest_are_restored(pty):
    _, follower = pty
    original = termios.tcgetattr(follower)
    console = Console(input_fd=follower, output_fd=follower)
    raw = bytearray(console.ioctl(TCGETS, 0))
    # Clear ECHO and ICANON in c_lflag (the fourth tcflag_t): raw mode.
    lflag = struct.unpack_from("<I", raw, 12)[0]
    struct.pack_into("<I", raw, 12, lflag & ~(termios.ECHO | termios.ICANON))

    assert console.ioctl(TCSETS, bytes(raw)) == 0
    assert not termios.tcgetattr(follower)[3] & termios.ECHO
    assert _errno(console.ioctl, TCSETS, 0) == errno.EINVAL

    console.close()
    assert termios.tcgetattr(follower) == original


def test_console_side_follows_the_open_direction(pty):
    _, follower = pty
    out_r, out_w = os.pipe()
    try:
        console = Console(input_fd=follower, output_fd=out_w)
        vfs = _vfs(DevFs(console))

        assert vfs.open("/dev/console", O_RDONLY).isatty()
        assert not vfs.open("/dev/console", O_WRONLY).isatty()
    finally:
        os.close(out_r)
        os.close(out_w)


def test_devfs_for_kernel_puts_the_kernels_console_behind_dev_console(pipes):
    console, _, drain = pipes

    class Kernel:
        pass

    kernel = Kernel()
    kernel.console = console
    vfs = _vfs(DevFs.for_kernel(kernel))

    vfs.open("/dev/console", O_WRONLY).write(b"hi")

    assert os.read(drain, 10) == b"hi"
