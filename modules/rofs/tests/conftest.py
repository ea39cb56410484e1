"""Fixtures for the ROFS tests: trees written by mkfs, mounted on an in-memory disk."""

import io
import os

import pytest
from hypothesis import HealthCheck, settings

from osv.block import MemoryDisk
from osv.image import ManifestEntry
from osv.vfs import Vfs
from osv_mod_rofs import RoFs, write_rofs

# Hypothesis counts examples, never times them: the machines running these
# tests are shared with virtual machines and compilers.
settings.register_profile(
    "osv", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("osv")


class Tree:
    """Entries for mkfs from a plain description, with host files made on the fly.

    ``spec`` maps guest paths, in manifest order, to bytes (a file with that
    content), ``None`` (a directory) or ``"->target"`` (a symlink).
    """

    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    def entries(self, spec):
        entries = []
        for guest, value in spec.items():
            if value is None:
                entries.append(ManifestEntry(guest, "dir", None, None, "test"))
            elif isinstance(value, str):
                assert value.startswith("->")
                entries.append(ManifestEntry(guest, "symlink", None, value[2:], "test"))
            else:
                self.count += 1
                host = self.directory / f"host{self.count}"
                host.write_bytes(value)
                entries.append(ManifestEntry(guest, "file", str(host), None, "test"))
        return entries

    def image(self, spec, times=False):
        """The bytes of the ROFS holding ``spec`` (OSv's exactly, without times)."""
        out = io.BytesIO()
        write_rofs(self.entries(spec), out, times=times)
        return out.getvalue()


@pytest.fixture
def tree(tmp_path):
    return Tree(tmp_path)


def _mount(image, options="", vfs=None, mountpoint="/"):
    """Mount ROFS bytes at ``mountpoint`` of ``vfs`` (a fresh VFS); return the VFS."""
    vfs = vfs or Vfs()
    fs = RoFs({"vblk0.1": MemoryDisk(image, name="vblk0.1")})
    vfs.mount(fs, "/dev/vblk0.1", mountpoint, options, readonly=True)
    return vfs


def _read_all(vfs, path):
    file = vfs.open(path, os.O_RDONLY)
    try:
        return file.pread(1 << 30, 0)
    finally:
        file.close()


@pytest.fixture
def mount():
    """mount(image, options="", vfs=None, mountpoint="/") -> the VFS."""
    return _mount


@pytest.fixture
def read_all():
    """read_all(vfs, path) -> the whole content of the file at ``path``."""
    return _read_all
