"""osv-mod-rofs: OSv's read-only file system (ROFS) for the osv kernel.

Registers the file-system type ``rofs``: ``RoFs.mkfs`` writes one at image
assembly (``osv build --fs rofs``, ``osv mkfs``), and the driver mounts it
read-only at boot.
"""

from osv import hookimpl

from ._driver import (
    DIRECTORY_SIZE,
    PERMISSIONS,
    SEGMENT_SIZE,
    RoFs,
    RofsDirectory,
    RofsFile,
    RofsMount,
    RofsSymlink,
    RofsVnode,
)
from ._errors import RofsError, RofsMkfsError, RofsMountError
from ._format import (
    DIRECTORY_ENTRY_HEAD,
    INODE,
    ROFS_BLOCK_SIZE,
    ROFS_MAGIC,
    ROFS_TIME,
    ROFS_TIMES_MAGIC,
    ROFS_VERSION,
    ROOT_INODE,
    S_IFDIR,
    S_IFLNK,
    S_IFREG,
    SUPERBLOCK,
    SYMLINK_HEAD,
    DirectoryEntry,
    Inode,
    RofsMetadata,
    Superblock,
    read_metadata,
)
from ._mkfs import Entry, RofsSummary, write_rofs


@hookimpl
def osv_filesystem_types():
    """Register the ``rofs`` file-system type."""
    return [RoFs]


__all__ = [
    "DIRECTORY_ENTRY_HEAD",
    "DIRECTORY_SIZE",
    "INODE",
    "PERMISSIONS",
    "ROFS_BLOCK_SIZE",
    "ROFS_MAGIC",
    "ROFS_TIME",
    "ROFS_TIMES_MAGIC",
    "ROFS_VERSION",
    "ROOT_INODE",
    "SEGMENT_SIZE",
    "SUPERBLOCK",
    "SYMLINK_HEAD",
    "S_IFDIR",
    "S_IFLNK",
    "S_IFREG",
    "DirectoryEntry",
    "Entry",
    "Inode",
    "RoFs",
    "RofsDirectory",
    "RofsError",
    "RofsFile",
    "RofsMetadata",
    "RofsMkfsError",
    "RofsMount",
    "RofsMountError",
    "RofsSummary",
    "RofsSymlink",
    "RofsVnode",
    "Superblock",
    "osv_filesystem_types",
    "read_metadata",
    "write_rofs",
]
