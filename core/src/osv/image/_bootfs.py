"""OSv's bootfs: the small file-system blob unpacked into the RAM root at boot."""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from ._errors import BootfsError

if TYPE_CHECKING:
    # Only writing a bootfs takes manifest entries; booting reads one.
    from ._manifest import ManifestEntry

logger = logging.getLogger(__name__)

# Format (little-endian), as OSv's mkbootfs.py writes it and its kernel's
# unpack_bootfs reads it, so a blob is usable by either:
#
# * an array of 128-byte records, one per object, then one all-zero record;
#   each record is u64 size, u64 offset (of the content, from the start of
#   the blob), i8 type (0 = file or directory, 1 = symlink) and
#   char name[111] (the guest path, NUL-padded);
# * directories have a name ending in "/" and size 0; a symlink's content is
#   its target followed by one NUL;
# * the content area starts right after the terminator, at (n + 1) * 128,
#   and holds the contents in record order, unaligned.
#
# The kernel trusts every record; our reader does not, because a blob may
# come from a damaged or hostile image: each record is checked against the
# blob before anyone uses it.
BOOTFS_RECORD = struct.Struct("<QQb111s")
BOOTFS_RECORD_SIZE = BOOTFS_RECORD.size  # 128
BOOTFS_TYPE_FILE = 0  # regular file, or directory when the name ends in "/"
BOOTFS_TYPE_SYMLINK = 1

# name[] is 111 bytes and must keep its terminating NUL.  OSv's packer does
# not check this and truncates silently; we refuse such names.
BOOTFS_NAME_MAX = 110

_COPY_CHUNK = 1 << 20


class BootfsRecord(NamedTuple):
    """One metadata record; ``offset`` and ``size`` locate its content.

    A named tuple: a boot reads every record of the image's tree, and a
    tuple is the cheapest record to make.
    """

    name: str
    type: int
    offset: int
    size: int

    @property
    def is_directory(self) -> bool:
        return self.type == BOOTFS_TYPE_FILE and self.name.endswith("/")

    @property
    def is_symlink(self) -> bool:
        return self.type == BOOTFS_TYPE_SYMLINK

    def content(self, blob: bytes | bytearray | memoryview) -> memoryview:
        """The record's bytes inside *blob* (a symlink's include its NUL)."""
        return memoryview(blob)[self.offset : self.offset + self.size]


# A named tuple rather than a frozen dataclass: making a dataclass runs
# generated code at import (about half a millisecond each), and booting
# imports this module only to read a blob.
class _Planned(NamedTuple):
    name: bytes
    type: int
    size: int
    entry: ManifestEntry


def write_bootfs(entries: Iterable[ManifestEntry], out: BinaryIO) -> int:
    """Pack *entries* (in their order) into a bootfs blob written to *out*.

    Returns the number of bytes written.
    """
    planned = [_plan(entry) for entry in entries]
    _refuse_duplicates(planned)

    # Metadata first: every offset is known once all sizes are.
    written = 0
    offset = (len(planned) + 1) * BOOTFS_RECORD_SIZE
    for item in planned:
        out.write(BOOTFS_RECORD.pack(item.size, offset, item.type, item.name))
        offset += item.size
        written += BOOTFS_RECORD_SIZE
    out.write(bytes(BOOTFS_RECORD_SIZE))
    written += BOOTFS_RECORD_SIZE

    for item in planned:
        written += _write_content(item, out)
    logger.debug("bootfs: %d records, %d bytes", len(planned), written)
    return written


def read_bootfs(buffer: bytes | bytearray | memoryview) -> list[BootfsRecord]:
    """Return the records of a bootfs blob, each checked against the blob.

    Every offset/size must lie inside the content area, names must be
    NUL-terminated absolute UTF-8 paths, and symlink contents must be a
    NUL-terminated target; anything else raises ``BootfsError``.
    """
    blob = memoryview(buffer).cast("B")
    raw_records = []
    position = 0
    while True:
        if position + BOOTFS_RECORD_SIZE > len(blob):
            raise BootfsError(
                f"bootfs ends at byte {len(blob)} before its terminating record"
            )
        size, offset, kind, raw_name = BOOTFS_RECORD.unpack_from(blob, position)
        if raw_name[0] == 0:
            break
        raw_records.append((position, size, offset, kind, raw_name))
        position += BOOTFS_RECORD_SIZE

    content_start = position + BOOTFS_RECORD_SIZE
    records = [
        _checked_record(blob, content_start, *raw_record) for raw_record in raw_records
    ]
    return records


def _plan(entry: ManifestEntry) -> _Planned:
    if entry.kind == "dir":
        name = entry.guest if entry.guest.endswith("/") else entry.guest + "/"
        return _Planned(_encode_name(name, entry), BOOTFS_TYPE_FILE, 0, entry)

    if entry.kind == "symlink":
        if not entry.target or "\0" in entry.target:
            raise BootfsError(
                f"{entry.origin}: invalid symlink target {entry.target!r}"
            )
        size = len(entry.target.encode()) + 1
        return _Planned(
            _encode_name(entry.guest, entry), BOOTFS_TYPE_SYMLINK, size, entry
        )

    if entry.kind == "file":
        try:
            size = os.stat(entry.host).st_size
        except (OSError, TypeError) as error:
            raise BootfsError(
                f"{entry.origin}: cannot read {entry.host}: {error}"
            ) from None
        return _Planned(_encode_name(entry.guest, entry), BOOTFS_TYPE_FILE, size, entry)

    raise BootfsError(f"{entry.origin}: unknown entry kind {entry.kind!r}")


def _encode_name(name: str, entry: ManifestEntry) -> bytes:
    encoded = name.encode()
    if b"\0" in encoded:
        raise BootfsError(f"{entry.origin}: guest path {name!r} contains a NUL byte")
    if len(encoded) > BOOTFS_NAME_MAX:
        raise BootfsError(
            f"{entry.origin}: guest path {name!r} is {len(encoded)} bytes long; "
            f"bootfs names hold at most {BOOTFS_NAME_MAX}"
        )
    return encoded


def _refuse_duplicates(planned: list[_Planned]) -> None:
    origins: dict[bytes, str] = {}
    for item in planned:
        if item.name in origins:
            raise BootfsError(
                f"{item.entry.origin}: {item.name.decode()} is already packed "
                f"from {origins[item.name]}"
            )
        origins[item.name] = item.entry.origin


def _write_content(item: _Planned, out: BinaryIO) -> int:
    entry = item.entry
    if entry.kind == "dir":
        return 0
    if entry.kind == "symlink":
        out.write(entry.target.encode() + b"\0")
        return item.size

    # The size went into the metadata already; a file that changed since
    # would shift every later offset, so it is an error rather than a guess.
    copied = 0
    try:
        with open(entry.host, "rb") as source:
            while chunk := source.read(min(_COPY_CHUNK, item.size - copied + 1)):
                copied += len(chunk)
                if copied > item.size:
                    break
                out.write(chunk)
    except OSError as error:
        raise BootfsError(
            f"{entry.origin}: cannot read {entry.host}: {error.strerror}"
        ) from None
    if copied != item.size:
        raise BootfsError(
            f"{entry.origin}: {entry.host} changed size while being packed "
            f"({item.size} bytes expected)"
        )
    return copied


def _checked_record(
    blob: memoryview,
    content_start: int,
    position: int,
    size: int,
    offset: int,
    kind: int,
    raw_name: bytes,
) -> BootfsRecord:
    where = f"bootfs record at byte {position}"

    end_of_name = raw_name.find(b"\0")
    if end_of_name < 0:
        raise BootfsError(f"{where}: name is not NUL-terminated")
    try:
        name = raw_name[:end_of_name].decode()
    except UnicodeDecodeError:
        raise BootfsError(f"{where}: name is not UTF-8") from None
    if not name.startswith("/"):
        raise BootfsError(f"{where}: name {name!r} is not an absolute path")

    if kind not in (BOOTFS_TYPE_FILE, BOOTFS_TYPE_SYMLINK):
        raise BootfsError(f"{where} ({name}): unknown type {kind}")
    if offset < content_start or offset + size > len(blob):
        raise BootfsError(
            f"{where} ({name}): content {offset}+{size} lies outside the content "
            f"area {content_start}..{len(blob)}"
        )
    if name.endswith("/") and (kind != BOOTFS_TYPE_FILE or size != 0):
        raise BootfsError(
            f"{where} ({name}): a directory must be a type-0 record of size 0"
        )

    if kind == BOOTFS_TYPE_SYMLINK:
        target = bytes(blob[offset : offset + size])
        if size < 2 or target[-1] != 0 or b"\0" in target[:-1]:
            raise BootfsError(f"{where} ({name}): symlink target is not NUL-terminated")
        try:
            target[:-1].decode()
        except UnicodeDecodeError:
            raise BootfsError(
                f"{where} ({name}): symlink target is not UTF-8"
            ) from None

    return BootfsRecord(name, kind, offset, size)
