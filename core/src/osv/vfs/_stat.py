"""File and file-system attributes, and their Linux x86-64 binary layouts."""

import dataclasses
import errno
import struct

from ._abi import (
    STATX__RESERVED,
    STATX_BASIC_STATS,
    STATX_MNT_ID,
    major,
    minor,
)
from ._errors import FsError

# struct stat of x86-64 (arch/x86/include/uapi/asm/stat.h): dev, ino, nlink,
# mode, uid, gid, pad, rdev, size, blksize, blocks, three (sec, nsec) pairs,
# and three unused longs: 144 bytes.
_STAT = struct.Struct("<QQQIIIiQqqqqqqqqq24x")

# struct statx (include/uapi/linux/stat.h), up to stx_dio_offset_align; the
# rest of the 256 bytes is spare and zero. Timestamps are (i64 sec, u32 nsec,
# i32 reserved) and come in the order atime, btime, ctime, mtime.
_STATX = struct.Struct("<IIQIIIH2xQQQQ" + "qIi" * 4 + "IIIIQII")
_STATX_SIZE = 256

# struct statfs of x86-64 (include/uapi/asm-generic/statfs.h with 64-bit
# longs): type, bsize, blocks, bfree, bavail, files, ffree, fsid[2], namelen,
# frsize, flags, spare[4]: 120 bytes.
_STATFS = struct.Struct("<qqQQQQQIIqqq32x")

_NS = 1_000_000_000


# A dataclass, unlike the other records on the boot path: ramfs, pipes and
# eventfds copy it with dataclasses.replace.
@dataclasses.dataclass(slots=True)
class Stat:
    """What stat(2) reports about one file."""

    st_dev: int
    st_ino: int
    st_mode: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_rdev: int
    st_size: int
    st_blksize: int
    st_blocks: int
    st_atime_ns: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_mnt_id: int = 0

    def pack(self) -> bytes:
        """The Linux x86-64 ``struct stat`` (144 bytes) for these attributes."""
        a_sec, a_nsec = divmod(self.st_atime_ns, _NS)
        m_sec, m_nsec = divmod(self.st_mtime_ns, _NS)
        c_sec, c_nsec = divmod(self.st_ctime_ns, _NS)
        return _STAT.pack(
            self.st_dev,
            self.st_ino,
            self.st_nlink,
            self.st_mode,
            self.st_uid,
            self.st_gid,
            0,
            self.st_rdev,
            self.st_size,
            self.st_blksize,
            self.st_blocks,
            a_sec,
            a_nsec,
            m_sec,
            m_nsec,
            c_sec,
            c_nsec,
        )

    def pack_statx(self, mask: int = STATX_BASIC_STATS) -> bytes:
        """The Linux ``struct statx`` (256 bytes) for these attributes.

        ``mask`` is what the caller asked for. Like Linux, the reply carries
        every field that is cheap to give, whatever was asked, and says which
        in ``stx_mask``; the birth time is not known and never claimed.
        """
        if mask & STATX__RESERVED:
            raise FsError(errno.EINVAL, "statx mask uses the reserved bit")
        a_sec, a_nsec = divmod(self.st_atime_ns, _NS)
        m_sec, m_nsec = divmod(self.st_mtime_ns, _NS)
        c_sec, c_nsec = divmod(self.st_ctime_ns, _NS)
        body = _STATX.pack(
            STATX_BASIC_STATS | STATX_MNT_ID,
            self.st_blksize,
            0,
            self.st_nlink,
            self.st_uid,
            self.st_gid,
            self.st_mode,
            self.st_ino,
            self.st_size,
            self.st_blocks,
            0,
            a_sec,
            a_nsec,
            0,
            0,
            0,
            0,
            c_sec,
            c_nsec,
            0,
            m_sec,
            m_nsec,
            0,
            major(self.st_rdev),
            minor(self.st_rdev),
            major(self.st_dev),
            minor(self.st_dev),
            self.st_mnt_id,
            0,
            0,
        )
        return body + bytes(_STATX_SIZE - len(body))


# A dataclass too: ramfs copies it with dataclasses.replace.
@dataclasses.dataclass(slots=True)
class StatFs:
    """What statfs(2) reports about one mounted file system."""

    f_type: int
    f_bsize: int
    f_blocks: int = 0
    f_bfree: int = 0
    f_bavail: int = 0
    f_files: int = 0
    f_ffree: int = 0
    f_fsid: int = 0
    f_namelen: int = 255
    f_frsize: int = 0
    f_flags: int = 0

    def pack(self) -> bytes:
        """The Linux x86-64 ``struct statfs`` (120 bytes)."""
        return _STATFS.pack(
            self.f_type,
            self.f_bsize,
            self.f_blocks,
            self.f_bfree,
            self.f_bavail,
            self.f_files,
            self.f_ffree,
            self.f_fsid & 0xFFFFFFFF,
            (self.f_fsid >> 32) & 0xFFFFFFFF,
            self.f_namelen,
            self.f_frsize or self.f_bsize,
            self.f_flags,
        )
