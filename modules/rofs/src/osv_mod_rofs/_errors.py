"""Exceptions of the ROFS module: a file system that cannot be written or mounted."""

import errno

from osv.vfs import FsError


class RofsError(Exception):
    """Something about a ROFS file system is wrong; see the subclasses."""


class RofsMkfsError(RofsError):
    """A tree cannot be written as ROFS (a misplaced entry, an unreadable file)."""


class RofsMountError(FsError, RofsError):
    """A device does not hold a ROFS file system this driver can trust.

    Raised at mount, before anything is served: a bad magic, version or block
    size, or a count or offset that points outside the tables or the
    partition. Its errno is EINVAL, as mount(2) reports an unusable file
    system.
    """

    def __init__(self, message: str) -> None:
        super().__init__(errno.EINVAL, message)

    def __str__(self) -> str:
        return self.message
