"""Mount table: crossing mount points both ways, stacking, umount, read-only mounts."""

import errno

import pytest

from osv.vfs import (
    MNT_DETACH,
    MS_RDONLY,
    O_CREAT,
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
    RAMFS_MAGIC,
    TMPFS_MAGIC,
    DevFs,
    FileSystemType,
    FsError,
    Mount,
    RamFs,
    Vfs,
    mounts_text,
)


def _errno(call, *args, **kwargs) -> int:
    with pytest.raises(FsError) as err:
        call(*args, **kwargs)
    return err.value.errno


@pytest.fixture
def vfs():
    vfs = Vfs()
    vfs.register_filesystem(RamFs())
    vfs.register_filesystem(DevFs())
    vfs.mount("ramfs", "none", "/")
    for path in ("/mnt", "/mnt/inner", "/other", "/dev"):
        vfs.mkdir(path)
    vfs.open("/mnt/inner/hidden", O_CREAT | O_WRONLY, 0o644).close()
    return vfs


def _write(vfs, path, data=b"data"):
    f = vfs.open(path, O_CREAT | O_WRONLY, 0o644)
    f.write(data)
    f.close()


def test_mount_hides_the_covered_directory_until_umount(vfs):
    vfs.mount("ramfs", "second", "/mnt/inner")

    assert [name for name, _, _ in vfs.resolve("/mnt/inner").readdir()] == []
    assert _errno(vfs.stat, "/mnt/inner/hidden") == errno.ENOENT
    _write(vfs, "/mnt/inner/new")

    vfs.umount("/mnt/inner")

    assert vfs.stat("/mnt/inner/hidden").st_size == 0
    assert _errno(vfs.stat, "/mnt/inner/new") == errno.ENOENT


def test_dotdot_from_a_mount_root_climbs_into_the_parent_mount(vfs):
    vfs.mount("ramfs", "second", "/mnt/inner")
    inner_root = vfs.resolve("/mnt/inner")
    mnt = vfs.resolve("/mnt")

    assert vfs.resolve("/mnt/inner/..") is mnt
    assert vfs.resolve("..", inner_root) is mnt
    assert vfs.resolve("../../other", inner_root) is vfs.resolve("/other")
    assert vfs.resolve("/mnt/inner/../inner") is inner_root
    assert vfs.resolve("/../../..") is vfs.root


def test_stat_reports_each_mount_as_its_own_device(vfs):
    vfs.mount("ramfs", "second", "/mnt/inner")

    outer = vfs.stat("/mnt")
    inner = vfs.stat("/mnt/inner")

    assert outer.st_dev != inner.st_dev
    assert inner.st_ino == 1
    assert vfs.statfs("/mnt/inner").f_type == RAMFS_MAGIC
    vfs.mount("devfs", "none", "/dev")
    assert vfs.statfs("/dev/null").f_type == TMPFS_MAGIC


def test_stacked_mounts_show_the_last_one_and_unstack_in_order(vfs):
    first = vfs.mount("ramfs", "first", "/mnt")
    _write(vfs, "/mnt/from-first")
    second = vfs.mount("ramfs", "second", "/mnt")

    assert vfs.resolve("/mnt").mount is second
    assert _errno(vfs.stat, "/mnt/from-first") == errno.ENOENT
    assert vfs.resolve("/mnt/..") is vfs.root

    vfs.umount("/mnt")
    assert vfs.resolve("/mnt").mount is first
    assert vfs.stat("/mnt/from-first").st_size == 4
    vfs.umount("/mnt")
    assert vfs.stat("/mnt/inner/hidden").st_size == 0


def test_mounting_over_the_root_replaces_it(vfs):
    old_root = vfs.root
    new = vfs.mount("ramfs", "newroot", "/")

    assert vfs.root is new.root
    assert vfs.resolve("/..") is new.root
    assert _errno(vfs.stat, "/mnt") == errno.ENOENT

    vfs.umount("/")
    assert vfs.root is old_root


def test_umount_refuses_what_linux_refuses(vfs):
    assert _errno(vfs.umount, "/mnt") == errno.EINVAL
    assert _errno(vfs.umount, "/nowhere") == errno.ENOENT
    assert _errno(vfs.umount, "/") == errno.EBUSY

    vfs.mount("ramfs", "outer", "/mnt")
    vfs.mkdir("/mnt/sub")
    vfs.mount("ramfs", "nested", "/mnt/sub")
    assert _errno(vfs.umount, "/mnt") == errno.EBUSY

    _write(vfs, "/mnt/sub/f")
    open_file = vfs.open("/mnt/sub/f", O_RDONLY)
    assert _errno(vfs.umount, "/mnt/sub") == errno.EBUSY
    open_file.close()
    vfs.umount("/mnt/sub")
    vfs.umount("/mnt")


def test_lazy_umount_detaches_a_busy_subtree(vfs):
    vfs.mount("ramfs", "outer", "/mnt")
    vfs.mkdir("/mnt/sub")
    vfs.mount("ramfs", "nested", "/mnt/sub")
    _write(vfs, "/mnt/sub/f", b"still here")
    open_file = vfs.open("/mnt/sub/f", O_RDONLY)

    vfs.umount("/mnt", MNT_DETACH)

    assert [m.mountpoint for m in vfs.mounts()] == ["/"]
    assert vfs.stat("/mnt/inner/hidden").st_size == 0
    assert open_file.read(100) == b"still here"


def test_operations_across_mounts_are_exdev_or_ebusy(vfs):
    vfs.mount("ramfs", "second", "/mnt/inner")
    _write(vfs, "/other/f")

    assert _errno(vfs.rename, "/other/f", "/mnt/inner/f") == errno.EXDEV
    assert _errno(vfs.link, "/other/f", "/mnt/inner/f") == errno.EXDEV
    assert _errno(vfs.rmdir, "/mnt/inner") == errno.EBUSY
    assert _errno(vfs.rename, "/mnt/inner", "/mnt/moved") == errno.EBUSY
    assert _errno(vfs.rename, "/other", "/mnt/inner") == errno.EBUSY


def test_mount_point_must_be_an_existing_directory(vfs):
    _write(vfs, "/file")

    assert _errno(vfs.mount, "ramfs", "x", "/file") == errno.ENOTDIR
    assert _errno(vfs.mount, "ramfs", "x", "/missing") == errno.ENOENT
    assert _errno(vfs.mount, "nosuchfs", "x", "/mnt") == errno.ENODEV


def test_first_mount_must_be_the_root():
    vfs = Vfs()

    assert _errno(vfs.mount, RamFs(), "none", "/mnt") == errno.ENOENT
    assert _errno(lambda: vfs.root) == errno.ENOENT
    assert _errno(vfs.resolve, "/") == errno.ENOENT
    vfs.mount(RamFs(), "none", "//")
    assert vfs.resolve("/").is_dir


def test_two_types_claiming_one_name_is_an_error_naming_both():
    class OtherRamFs(FileSystemType):
        name = "ramfs"

        def mount(self, vfs, device, options, readonly, **extra) -> Mount:
            raise AssertionError("never mounted")

    vfs = Vfs()
    vfs.register_filesystem(RamFs())

    with pytest.raises(FsError) as err:
        vfs.register_filesystem(OtherRamFs())

    assert err.value.errno == errno.EEXIST
    assert "RamFs" in str(err.value) and "OtherRamFs" in str(err.value)


def test_read_only_mount_refuses_changes_with_linux_precedence(vfs):
    vfs.mount("ramfs", "ro", "/mnt", options="mode=0700", readonly=True)

    assert vfs.resolve("/mnt").mount.flags & MS_RDONLY
    assert vfs.stat("/mnt").st_mode & 0o7777 == 0o700
    assert vfs.statfs("/mnt").f_flags & MS_RDONLY
    assert _errno(vfs.mkdir, "/mnt/new") == errno.EROFS
    assert _errno(vfs.open, "/mnt/new", O_CREAT | O_WRONLY) == errno.EROFS
    assert _errno(vfs.open, "/mnt", O_RDWR) == errno.EISDIR
    assert _errno(vfs.symlink, "x", "/mnt/link") == errno.EROFS
    # Linux looks the name up first: an existing name is EEXIST, not EROFS;
    # unlink and rmdir ask for write access before the lookup.
    assert _errno(vfs.mkdir, "/mnt/..") == errno.EEXIST
    assert _errno(vfs.unlink, "/mnt/missing") == errno.EROFS
    assert _errno(vfs.rmdir, "/mnt/missing") == errno.EROFS
    assert _errno(vfs.access, "/mnt", 2) == errno.EROFS
    assert _errno(vfs.utimens, "/mnt") == errno.EROFS
    assert _errno(vfs.chmod, "/mnt", 0o755) == errno.EROFS
    vfs.access("/mnt", 4)


def test_devices_stay_writable_on_a_read_only_mount(vfs):
    vfs.mount("devfs", "none", "/dev", readonly=True)

    null = vfs.open("/dev/null", O_WRONLY | O_CREAT, 0o666)

    assert null.write(b"discarded") == 9
    vfs.access("/dev/null", 2)


def test_absolute_and_relative_symlinks_cross_mounts(vfs):
    vfs.mount("ramfs", "second", "/mnt/inner")
    _write(vfs, "/mnt/inner/target", b"across")
    vfs.symlink("/mnt/inner/target", "/other/abs")
    vfs.symlink("../mnt/inner", "/other/rel")
    vfs.symlink("../../other", "/mnt/inner/back")

    assert vfs.open("/other/abs", O_RDONLY).read(10) == b"across"
    assert vfs.open("/other/rel/target", O_RDONLY).read(10) == b"across"
    assert vfs.resolve("/mnt/inner/back") is vfs.resolve("/other")
    # ".." after a followed link is the physical parent of where it led.
    assert vfs.resolve("/other/rel/..") is vfs.resolve("/mnt")


def test_realpath_crosses_mounts_and_follows_renames(vfs):
    vfs.mount("ramfs", "second", "/mnt/inner")
    vfs.mkdir("/mnt/inner/deep")
    _write(vfs, "/mnt/inner/deep/f")
    f = vfs.open("/mnt/inner/deep/f", O_RDONLY)
    deep = vfs.resolve("/mnt/inner/deep")

    assert f.path == "/mnt/inner/deep/f"
    assert vfs.realpath(f.vnode) == "/mnt/inner/deep/f"
    assert vfs.realpath(vfs.resolve("/mnt/inner")) == "/mnt/inner"
    assert vfs.realpath(vfs.root) == "/"

    vfs.rename("/mnt/inner/deep", "/mnt/inner/moved")
    assert vfs.realpath(deep) == "/mnt/inner/moved"
    assert vfs.realpath(f.vnode) == "/mnt/inner/moved/f"
    assert vfs.fd_target(f) == "/mnt/inner/moved/f"

    vfs.unlink("/mnt/inner/moved/f")
    assert _errno(vfs.realpath, f.vnode) == errno.ENOENT
    assert vfs.fd_target(f) == "/mnt/inner/deep/f (deleted)"
    vfs.rmdir("/mnt/inner/moved")
    assert _errno(vfs.realpath, deep) == errno.ENOENT


def test_relative_paths_from_a_removed_directory_fail_like_linux(vfs):
    cwd = vfs.mkdir("/gone")
    vfs.rmdir("/gone")

    assert _errno(vfs.open, "new", O_CREAT | O_WRONLY, 0o644, cwd) == errno.ENOENT
    assert vfs.resolve(".", cwd) is cwd


def test_mounts_text_lists_mounts_in_proc_mounts_format(vfs):
    vfs.mkdir("/with space")
    vfs.mount("ramfs", "none", "/with space", options="mode=0755")
    vfs.mount("devfs", "", "/dev", readonly=True)

    assert mounts_text(vfs) == (
        "none / ramfs rw 0 0\n"
        "none /with\\040space ramfs rw,mode=0755 0 0\n"
        "none /dev devfs ro 0 0\n"
    )
