"""The error type of the VFS layer: a Linux errno with a readable message."""

import errno
import os


class FsError(Exception):
    """A file-system failure carrying the errno Linux would report for it.

    The system-call layer returns ``-err.errno`` to the guest; the message is
    for logs and for people.
    """

    def __init__(self, err: int, message: str = "") -> None:
        self.errno = err
        self.message = message or os.strerror(err)
        super().__init__(err, self.message)

    def __str__(self) -> str:
        name = errno.errorcode.get(self.errno, str(self.errno))
        return f"{name}: {self.message}"
