"""The public API of osv.vfs is the contract the system-call layer is written to."""

import inspect

import pytest

import osv.vfs as vfs_api

CONTRACT = {
    "Vnode": {
        "lookup": ["name"],
        "create": ["name", "mode"],
        "mkdir": ["name", "mode"],
        "unlink": ["name"],
        "rmdir": ["name"],
        "rename": ["old_name", "new_dir", "new_name", "flags"],
        "symlink": ["name", "target"],
        "link": ["name", "target"],
        "readdir": [],
        "readlink": [],
        "read": ["offset", "size"],
        "readinto": ["offset", "buf"],
        "write": ["offset", "data"],
        "truncate": ["size"],
        "fsync": [],
        "setattr": ["mode", "uid", "gid", "atime_ns", "mtime_ns"],
        "stat": [],
        "open": ["flags", "path"],
    },
    "FileSystemType": {"mount": ["vfs", "device", "options", "readonly", "extra"]},
    "Mount": {"statfs": [], "unmount": []},
    "Vfs": {
        "register_filesystem": ["fstype"],
        "mount": [
            "fstype",
            "device",
            "mountpoint",
            "options",
            "readonly",
            "cwd",
            "extra",
        ],
        "umount": ["path", "flags", "cwd"],
        "mounts": [],
        "resolve": ["path", "cwd", "follow"],
        "resolve_parent": ["path", "cwd"],
        "realpath": ["vnode"],
        "fd_target": ["file"],
        "open": ["path", "flags", "mode", "cwd"],
        "stat": ["path", "cwd", "follow"],
        "statfs": ["path", "cwd"],
        "access": ["path", "mode", "cwd", "follow"],
        "mkdir": ["path", "mode", "cwd"],
        "rmdir": ["path", "cwd"],
        "unlink": ["path", "cwd"],
        "rename": ["old", "new", "cwd", "new_cwd", "flags"],
        "symlink": ["target", "path", "cwd"],
        "link": ["old", "new", "cwd", "new_cwd", "follow"],
        "readlink": ["path", "cwd"],
        "truncate": ["path", "length", "cwd"],
        "utimens": ["path", "times", "cwd", "follow"],
        "chmod": ["path", "mode", "cwd", "follow"],
        "chown": ["path", "uid", "gid", "cwd", "follow"],
        "setattr": ["vnode", "mode", "uid", "gid", "atime_ns", "mtime_ns"],
    },
    "File": {
        "read": ["size"],
        "readinto": ["buf"],
        "write": ["data"],
        "pread": ["size", "offset"],
        "preadinto": ["buf", "offset"],
        "pwrite": ["data", "offset"],
        "lseek": ["offset", "whence"],
        "truncate": ["size"],
        "fsync": [],
        "fstat": [],
        "fstatfs": [],
        "getdents64": ["bufsize"],
        "ioctl": ["request", "arg"],
        "isatty": [],
        "poll_ready": ["events"],
        "set_status_flags": ["flags"],
        "acquire": [],
        "close": [],
        "release": [],
    },
    "FdTable": {
        "install": ["file", "fd", "min_fd", "cloexec"],
        "get": ["fd"],
        "close": ["fd"],
        "dup": ["fd", "min_fd", "cloexec"],
        "dup2": ["old", "new"],
        "dup3": ["old", "new", "flags"],
        "get_cloexec": ["fd"],
        "set_cloexec": ["fd", "cloexec"],
        "items": [],
        "close_all": [],
    },
    "Stat": {"pack": [], "pack_statx": ["mask"]},
    "StatFs": {"pack": []},
    "DevFs": {"add_device": ["name", "factory"], "remove_device": ["name"]},
    "Console": {
        "read": ["size", "nonblocking"],
        "readinto": ["buf", "nonblocking"],
        "write": ["data"],
        "isatty": ["for_input"],
        "ioctl": ["request", "arg", "for_input"],
        "redirect_output": ["path"],
        "close": [],
    },
    "ProcProvider": {
        "pid": [],
        "exe_path": [],
        "cmdline_bytes": [],
        "maps_text": [],
        "status_text": [],
        "stat_text": [],
        "fd_targets": [],
        "meminfo_text": [],
        "cpuinfo_text": [],
        "hostname": [],
    },
}


@pytest.mark.parametrize("class_name", list(CONTRACT))
def test_public_class_has_the_contracted_methods(class_name):
    cls = getattr(vfs_api, class_name)
    for method, params in CONTRACT[class_name].items():
        signature = inspect.signature(getattr(cls, method))
        assert list(signature.parameters)[1:] == params, f"{class_name}.{method}"


def test_every_exported_name_exists_and_is_documented():
    for name in vfs_api.__all__:
        obj = getattr(vfs_api, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, name
    assert len(set(vfs_api.__all__)) == len(vfs_api.__all__)


def test_built_in_file_systems_are_registered_by_their_names():
    assert (vfs_api.RamFs.name, vfs_api.DevFs.name, vfs_api.ProcFs.name) == (
        "ramfs",
        "devfs",
        "procfs",
    )
    for cls in (vfs_api.RamFs, vfs_api.DevFs, vfs_api.ProcFs):
        assert issubclass(cls, vfs_api.FileSystemType)
        cls()


def test_fs_error_carries_errno_and_message():
    err = vfs_api.FsError(2, "no such thing")

    assert isinstance(err, Exception)
    assert (err.errno, err.message) == (2, "no such thing")
    assert str(err) == "ENOENT: no such thing"
    assert vfs_api.FsError(13).message == "Permission denied"
