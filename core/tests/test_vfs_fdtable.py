"""The fd table: lowest-free allocation, dup family, close-on-exec, limits."""

import errno
import fcntl
import os
import resource

import pytest

from osv.vfs import O_CLOEXEC, O_CREAT, O_RDWR, FdTable, File, FsError, RamFs, Vfs


class CountingFile(File):
    """A File that records when its last reference goes."""

    def __init__(self, vnode) -> None:
        super().__init__(vnode, O_RDWR, "/f")
        self.releases = 0

    def release(self) -> None:
        self.releases += 1


@pytest.fixture
def vnode():
    vfs = Vfs()
    vfs.mount(RamFs(), "none", "/")
    return vfs.open("/f", O_CREAT | O_RDWR, 0o644).vnode


def _errno(call, *args) -> int:
    try:
        call(*args)
    except (FsError, OSError) as err:
        return err.errno
    return 0


def test_install_takes_the_lowest_free_fd(vnode):
    table = FdTable()
    files = [CountingFile(vnode) for _ in range(4)]

    assert [table.install(f) for f in files[:3]] == [0, 1, 2]
    table.close(1)
    assert table.install(files[3]) == 1
    assert table.install(CountingFile(vnode), min_fd=10) == 10
    assert [fd for fd, _ in table.items()] == [0, 1, 2, 10]


def test_dup_shares_the_open_file_and_its_position(vnode):
    table = FdTable()
    f = CountingFile(vnode)
    fd = table.install(f)

    copy = table.dup(fd)
    table.get(fd).write(b"abc")

    assert table.get(copy) is f
    assert table.get(copy).position == 3
    table.close(fd)
    assert f.releases == 0
    table.close(copy)
    assert f.releases == 1


def test_dup2_replaces_and_releases_the_old_file(vnode):
    table = FdTable()
    a, b = CountingFile(vnode), CountingFile(vnode)
    fa, fb = table.install(a), table.install(b)

    assert table.dup2(fa, fb) == fb

    assert b.releases == 1
    assert table.get(fb) is a
    assert table.dup2(fa, fa) == fa
    assert table.dup2(fa, 500) == 500
    table.close_all()
    assert a.releases == 1


def test_dup_family_errors_match_linux(vnode):
    table = FdTable()
    fd = table.install(CountingFile(vnode))
    host_fd = os.open("/dev/null", os.O_RDONLY)
    bad = 999
    try:
        cases = [
            (lambda: table.dup2(bad, 5), lambda: os.dup2(bad, 5)),
            (lambda: table.dup2(fd, -1), lambda: os.dup2(host_fd, -1)),
            (lambda: table.dup3(fd, fd, 0), lambda: _host_dup3(host_fd, host_fd, 0)),
            (lambda: table.dup3(fd, 7, 1), lambda: _host_dup3(host_fd, 900, 1)),
            (lambda: table.close(bad), lambda: os.close(bad)),
            (lambda: table.get(bad), lambda: os.fstat(bad)),
            (lambda: table.dup(bad), lambda: os.dup(bad)),
        ]
        for ours, host in cases:
            assert _errno(ours) == _errno(host) != 0
    finally:
        os.close(host_fd)


def _host_dup3(old: int, new: int, flags: int) -> int:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.dup3(old, new, flags)
    if result < 0:
        raise OSError(ctypes.get_errno(), "dup3")
    os.close(result)
    return result


def test_close_on_exec_belongs_to_the_fd_not_the_file(vnode):
    table = FdTable()
    fd = table.install(CountingFile(vnode), cloexec=True)

    plain = table.dup(fd)
    flagged = table.dup(fd, cloexec=True)
    via_dup3 = table.dup3(fd, 20, O_CLOEXEC)
    via_dup2 = table.dup2(via_dup3, 21)

    assert table.get_cloexec(fd)
    assert not table.get_cloexec(plain)
    assert table.get_cloexec(flagged)
    assert table.get_cloexec(via_dup3)
    assert not table.get_cloexec(via_dup2)
    table.set_cloexec(fd, False)
    assert not table.get_cloexec(fd)
    table.close(fd)
    assert table.install(CountingFile(vnode)) == fd
    assert not table.get_cloexec(fd)


def test_host_agrees_that_dup_clears_close_on_exec():
    fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    # os.dup would mark the copy non-inheritable (PEP 446); F_DUPFD is raw.
    copy = fcntl.fcntl(fd, fcntl.F_DUPFD, 0)
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert not fcntl.fcntl(copy, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    finally:
        os.close(fd)
        os.close(copy)


def test_limit_gives_emfile_and_einval_like_rlimit_nofile(vnode):
    table = FdTable(limit=4)
    for _ in range(4):
        table.install(CountingFile(vnode))

    assert _errno(table.install, CountingFile(vnode)) == errno.EMFILE
    assert _errno(table.dup, 0) == errno.EMFILE
    assert _errno(table.dup, 0, 4) == errno.EINVAL
    assert _errno(table.dup2, 0, 4) == errno.EBADF
    table.close(2)
    assert table.dup(0) == 2


def test_default_limit_is_linuxs_soft_nofile_default():
    assert FdTable().limit == 1024
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    # F_DUPFD at the soft limit is EINVAL on the host too.
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        assert _errno(fcntl.fcntl, fd, fcntl.F_DUPFD, soft) == errno.EINVAL
    finally:
        os.close(fd)
