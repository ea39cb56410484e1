"""qcow2 disks, QEMU's copy-on-write image format: versions 2 and 3 read and
changed, new images made as version 3."""

from __future__ import annotations

import logging
import os
import struct
import zlib
from typing import BinaryIO

from osv._record import Record

from ._device import SECTOR_SIZE, BlockDevice, open_image_file
from ._errors import Qcow2Error

logger = logging.getLogger(__name__)

# How a qcow2 file maps the guest's disk (QEMU's docs/interop/qcow2.txt).
#
# All numbers are big-endian. The file is cut into clusters (512 B .. 2 MiB,
# 64 KiB by default). Cluster 0 holds the header. A guest offset is found
# through two tables: its cluster number's high bits index the L1 table,
# whose entry gives the host offset of an L2 table (one cluster), whose entry
# gives the host offset of the data cluster. An entry of 0 means the cluster
# was never written and reads as zeros (we open no backing files). Version 3
# adds a "reads as zeros" flag (bit 0) to L2 entries, and both versions have
# compressed clusters (bit 62), whose entry holds a byte offset and a sector
# count instead of a cluster offset. Bit 63 ("copied") says the table or
# cluster has exactly one user, so it may be written in place. The other bits
# of L1 and L2 entries are reserved and must be zero.
#
# Trusting the tables: QEMU reads a cluster that lies past the end of the
# file as zeros, and only `qemu-img check` calls such an image corrupt. For
# a program's files that would mean running damaged code, so at open every
# entry the active L1 table reaches is checked (reserved bits clear, offsets
# aligned, every cluster wholly inside the file) and a bad one is refused by
# name. QEMU and this writer both write whole clusters, so a cluster cut
# short means the file was cut short (an interrupted copy, a full disk); its
# missing bytes cannot be told from zeros, and it is refused too. Reads
# check again, in case the file shrinks while it is open.
#
# Every host cluster in use is counted in the refcount structure: a refcount
# table (whole clusters) of offsets of refcount blocks, each a cluster of
# 2**refcount_order-bit counters. Readers never need it; writers must keep it
# exact, or `qemu-img check` reports leaks or corruption.
#
# How we write: new clusters are only ever appended at the end of the file,
# and every table change is written through at once (no caches to flush, no
# dirty bit). A refcount block that is missing for a new cluster is placed in
# that very cluster and counts itself, so allocation never recurses.
# Clusters shared with snapshots or compressed are copied on write, and the
# old ones' counts dropped. What is left out on purpose: backing files,
# encryption, external data files, extended L2 entries, zstd compression,
# growing the refcount table (one cluster of it addresses 16 TiB of file at
# the default sizes) and writing compressed clusters.
QCOW2_MAGIC = b"QFI\xfb"

# Version 2 header (72 bytes): magic, version, backing_file_offset,
# backing_file_size, cluster_bits, size, crypt_method, l1_size,
# l1_table_offset, refcount_table_offset, refcount_table_clusters,
# nb_snapshots, snapshots_offset.
_HEADER_V2 = struct.Struct(">4sIQIIQIIQQIIQ")
# Version 3 adds (32 bytes): incompatible_features, compatible_features,
# autoclear_features, refcount_order, header_length; from 104 on, optional
# fields (the compression_type byte) and then the header extensions.
_HEADER_V3 = struct.Struct(">QQQII")
V2_HEADER_LENGTH = _HEADER_V2.size
V3_HEADER_LENGTH = V2_HEADER_LENGTH + _HEADER_V3.size
_COMPRESSION_TYPE_OFFSET = 104
_ENTRY = struct.Struct(">Q")

MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21
DEFAULT_CLUSTER_BITS = 16
DEFAULT_REFCOUNT_ORDER = 4

OFFSET_MASK = 0x00FF_FFFF_FFFF_FE00
REFTABLE_OFFSET_MASK = 0xFFFF_FFFF_FFFF_FE00
OFLAG_COPIED = 1 << 63
OFLAG_COMPRESSED = 1 << 62
OFLAG_ZERO = 1
# Bits that must be zero: in an L1 entry bits 0-8 and 56-62; in a standard L2
# entry bits 1-8 and 56-61, and bit 0 too before version 3 (which gave it the
# "reads as zeros" meaning). Compressed entries have no reserved bits, but
# their byte offset must stay below 2**56 like every other host offset.
L1E_RESERVED_MASK = 0x7F00_0000_0000_01FF
L2E_STD_RESERVED_MASK = 0x3F00_0000_0000_01FE
_MAX_HOST_OFFSET = 1 << 56

INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
_INCOMPAT_KNOWN = (
    INCOMPAT_DIRTY
    | INCOMPAT_CORRUPT
    | INCOMPAT_DATA_FILE
    | INCOMPAT_COMPRESSION
    | INCOMPAT_EXTL2
)
COMPRESSION_ZLIB = 0
COMPRESSION_ZSTD = 1

# QEMU's own limits on table sizes; a header claiming more is refused before
# anything that large is read.
MAX_L1_BYTES = 32 << 20
MAX_REFTABLE_BYTES = 8 << 20

# How many L2 tables and refcount blocks stay in memory (64 KiB each at the
# default cluster size; 64 L2 tables map 32 GiB of guest disk).
_TABLE_CACHE_SIZE = 64

# Offsets a table entry may name; file offsets are signed 64-bit numbers.
_MAX_FILE_OFFSET = 1 << 62

_UNALLOCATED, _ZERO, _DATA, _COMPRESSED = range(4)


class Qcow2Header(Record):
    """The fields of a qcow2 header, named as in QEMU's specification."""

    __slots__ = (
        "version",
        "backing_file_offset",
        "backing_file_size",
        "cluster_bits",
        "size",
        "crypt_method",
        "l1_size",
        "l1_table_offset",
        "refcount_table_offset",
        "refcount_table_clusters",
        "nb_snapshots",
        "snapshots_offset",
        "incompatible_features",
        "compatible_features",
        "autoclear_features",
        "refcount_order",
        "header_length",
        "compression_type",
    )

    def __init__(
        self,
        version: int,
        backing_file_offset: int,
        backing_file_size: int,
        cluster_bits: int,
        size: int,
        crypt_method: int,
        l1_size: int,
        l1_table_offset: int,
        refcount_table_offset: int,
        refcount_table_clusters: int,
        nb_snapshots: int,
        snapshots_offset: int,
        incompatible_features: int = 0,
        compatible_features: int = 0,
        autoclear_features: int = 0,
        refcount_order: int = DEFAULT_REFCOUNT_ORDER,
        header_length: int = V2_HEADER_LENGTH,
        compression_type: int = COMPRESSION_ZLIB,
    ) -> None:
        self.version = version
        self.backing_file_offset = backing_file_offset
        self.backing_file_size = backing_file_size
        self.cluster_bits = cluster_bits
        self.size = size
        self.crypt_method = crypt_method
        self.l1_size = l1_size
        self.l1_table_offset = l1_table_offset
        self.refcount_table_offset = refcount_table_offset
        self.refcount_table_clusters = refcount_table_clusters
        self.nb_snapshots = nb_snapshots
        self.snapshots_offset = snapshots_offset
        self.incompatible_features = incompatible_features
        self.compatible_features = compatible_features
        self.autoclear_features = autoclear_features
        self.refcount_order = refcount_order
        self.header_length = header_length
        self.compression_type = compression_type

    @classmethod
    def parse(cls, data: bytes, name: str) -> Qcow2Header:
        """The header at the start of ``data``; ``Qcow2Error`` if there is none."""
        if len(data) < V2_HEADER_LENGTH:
            raise Qcow2Error(
                f"{name}: too short for a qcow2 header ({len(data)} bytes): the "
                "image is truncated"
            )
        magic, version, *fields = _HEADER_V2.unpack_from(data)
        if magic != QCOW2_MAGIC:
            raise Qcow2Error(f"{name}: not a qcow2 file (bad magic {magic!r})")
        if version not in (2, 3):
            raise Qcow2Error(
                f"{name}: qcow2 version {version} is not supported (2 and 3 are)"
            )
        header = cls(version, *fields)
        if version == 3:
            if len(data) < V3_HEADER_LENGTH:
                raise Qcow2Error(
                    f"{name}: truncated qcow2 version 3 header ({len(data)} bytes)"
                )
            (
                header.incompatible_features,
                header.compatible_features,
                header.autoclear_features,
                header.refcount_order,
                header.header_length,
            ) = _HEADER_V3.unpack_from(data, V2_HEADER_LENGTH)
            optional = header.header_length > _COMPRESSION_TYPE_OFFSET
            if optional and len(data) > _COMPRESSION_TYPE_OFFSET:
                header.compression_type = data[_COMPRESSION_TYPE_OFFSET]
        return header

    def pack(self) -> bytes:
        """The header as written at offset 0 (version 3 only, 104 bytes)."""
        return _HEADER_V2.pack(
            QCOW2_MAGIC,
            self.version,
            self.backing_file_offset,
            self.backing_file_size,
            self.cluster_bits,
            self.size,
            self.crypt_method,
            self.l1_size,
            self.l1_table_offset,
            self.refcount_table_offset,
            self.refcount_table_clusters,
            self.nb_snapshots,
            self.snapshots_offset,
        ) + _HEADER_V3.pack(
            self.incompatible_features,
            self.compatible_features,
            self.autoclear_features,
            self.refcount_order,
            self.header_length,
        )


def is_qcow2(data: bytes) -> bool:
    """Whether ``data`` (a file's first bytes) starts like a qcow2 file."""
    return data[: len(QCOW2_MAGIC)] == QCOW2_MAGIC


class Qcow2Disk(BlockDevice):
    """A guest disk stored in a qcow2 file; ``size`` is the virtual size.

    Open with ``Qcow2Disk.open`` (versions 2 and 3; writable only where the
    image can be kept consistent) or make a new, empty version 3 image with
    ``Qcow2Disk.create``. Unwritten clusters read as zeros and take no space.
    """

    format = "qcow2"

    def __init__(
        self,
        path: str,
        file: BinaryIO,
        header: Qcow2Header,
        writable: bool,
        name: str,
    ) -> None:
        super().__init__(name, header.size, not writable)
        self.path = path
        self.header = header
        self.version = header.version
        self.cluster_bits = header.cluster_bits
        self.cluster_size = 1 << header.cluster_bits
        self._file = file
        self._fd = file.fileno()
        # Where the file ends: every cluster a table names must lie before
        # it. Writes that append clusters move it on (see _pwrite).
        self._file_end = os.fstat(self._fd).st_size
        self._l2_bits = header.cluster_bits - 3
        self._l2_mask = (1 << self._l2_bits) - 1
        self._l2_reserved = L2E_STD_RESERVED_MASK | (
            OFLAG_ZERO if header.version < 3 else 0
        )
        self._zero_cluster = bytes(self.cluster_size)
        self._l1 = self._load_l1()
        self._l2_tables: dict[int, bytearray] = {}
        self._last_compressed: tuple[int, bytes] | None = None
        if writable:
            self._prepare_writes()

    # -- opening and creating --------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        writable: bool = False,
        name: str = "vblk0",
    ) -> Qcow2Disk:
        """Open the qcow2 file at ``path``; ``Qcow2Error`` if it cannot be used."""
        filename, file = open_image_file(path, writable, Qcow2Error)
        try:
            data = os.pread(file.fileno(), 112, 0)
            header = Qcow2Header.parse(data, filename)
            file_size = os.fstat(file.fileno()).st_size
            _validate(header, file_size, filename, writable)
            disk = cls(filename, file, header, writable, name)
            disk.check()
        except BaseException:
            file.close()
            raise
        logger.debug(
            "%s: qcow2 v%d, %d bytes virtual, %d-byte clusters",
            filename,
            header.version,
            header.size,
            disk.cluster_size,
        )
        return disk

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        size: int,
        *,
        cluster_bits: int = DEFAULT_CLUSTER_BITS,
        name: str = "vblk0",
    ) -> Qcow2Disk:
        """Write a new, empty version 3 image of ``size`` bytes and open it writable.

        The layout is the one ``qemu-img create`` uses: header, refcount
        table, one refcount block, then the L1 table.
        """
        filename = os.fspath(path)
        if size <= 0 or size % SECTOR_SIZE:
            raise Qcow2Error(
                f"{filename}: size {size} is not a positive multiple of 512"
            )
        if not MIN_CLUSTER_BITS <= cluster_bits <= MAX_CLUSTER_BITS:
            raise Qcow2Error(f"{filename}: cluster_bits {cluster_bits} out of range")
        cluster_size = 1 << cluster_bits
        l1_size = -(-size // (cluster_size << (cluster_bits - 3)))
        if l1_size * 8 > MAX_L1_BYTES:
            raise Qcow2Error(f"{filename}: {size} bytes is too large for qcow2")
        l1_clusters = max(1, -(-l1_size * 8 // cluster_size))
        used = 3 + l1_clusters
        header = Qcow2Header(
            version=3,
            backing_file_offset=0,
            backing_file_size=0,
            cluster_bits=cluster_bits,
            size=size,
            crypt_method=0,
            l1_size=l1_size,
            l1_table_offset=3 * cluster_size,
            refcount_table_offset=cluster_size,
            refcount_table_clusters=1,
            nb_snapshots=0,
            snapshots_offset=0,
            refcount_order=DEFAULT_REFCOUNT_ORDER,
            header_length=V3_HEADER_LENGTH,
        )
        # The header is followed by an empty list of header extensions (its
        # end marker is eight zero bytes, already there).
        image = bytearray(used * cluster_size)
        image[:V3_HEADER_LENGTH] = header.pack()
        _ENTRY.pack_into(image, cluster_size, 2 * cluster_size)
        for cluster in range(used):
            struct.pack_into(">H", image, 2 * cluster_size + 2 * cluster, 1)
        try:
            with open(filename, "wb") as file:
                file.write(image)
        except OSError as error:
            raise Qcow2Error(f"cannot create {filename}: {error.strerror}") from None
        return cls.open(filename, writable=True, name=name)

    def close(self) -> None:
        self._file.close()

    def flush(self) -> None:
        if not self.readonly:
            os.fsync(self._fd)

    @property
    def file_size(self) -> int:
        """Bytes the file takes on the host (before any sparseness)."""
        return os.fstat(self._fd).st_size

    # -- reading ----------------------------------------------------------------

    def _readinto(self, offset: int, view: memoryview) -> None:
        cluster_size = self.cluster_size
        total = len(view)
        done = 0
        while done < total:
            guest = offset + done
            within = guest & (cluster_size - 1)
            length = min(cluster_size - within, total - done)
            kind, value = self._map(guest >> self.cluster_bits)
            if kind == _DATA:
                # Clusters that follow each other in the guest are usually
                # stored one after the other too: read such a run at once.
                run, following = length, value + cluster_size
                while done + run < total:
                    next_kind, next_host = self._map((guest + run) >> self.cluster_bits)
                    if next_kind != _DATA or next_host != following:
                        break
                    run += min(cluster_size, total - done - run)
                    following += cluster_size
                self._pread_into(view[done : done + run], value + within)
                done += run
                continue
            if kind == _COMPRESSED:
                view[done : done + length] = self._decompress(value)[
                    within : within + length
                ]
            else:
                view[done : done + length] = self._zero_cluster[:length]
            done += length

    def _map(self, cluster: int) -> tuple[int, int]:
        """Where guest cluster ``cluster`` is: (kind, host offset or L2 entry)."""
        l1_entry = self._l1[cluster >> self._l2_bits]
        table_offset = l1_entry & OFFSET_MASK
        if not table_offset:
            return _UNALLOCATED, 0
        table = self._l2_table(table_offset)
        (entry,) = _ENTRY.unpack_from(table, (cluster & self._l2_mask) * 8)
        return self._classify(entry, cluster)

    def _classify(self, entry: int, cluster: int) -> tuple[int, int]:
        """What the L2 entry of guest ``cluster`` says, checked against the file.

        Returns (kind, host offset) or, for a compressed cluster, (kind,
        entry); an entry the specification forbids, or one naming bytes the
        file does not have, raises ``Qcow2Error``.
        """
        if entry & OFLAG_COMPRESSED:
            offset, _ = self._compressed_extent(entry)
            if offset >= self._file_end or offset >= _MAX_HOST_OFFSET:
                raise self._corrupt(
                    f"the compressed data of guest cluster {cluster} "
                    f"(disk offset {cluster << self.cluster_bits:#x}) starts at "
                    f"{offset:#x}, past the end of the file ({self._file_end} bytes)"
                )
            return _COMPRESSED, entry
        if entry & self._l2_reserved:
            raise self._corrupt(
                f"the L2 entry of guest cluster {cluster} ({entry:#018x}) has "
                "reserved bits set"
            )
        host = entry & OFFSET_MASK
        if not host:
            return (_ZERO if entry & OFLAG_ZERO else _UNALLOCATED), 0
        if host & (self.cluster_size - 1):
            raise self._corrupt(
                f"guest cluster {cluster} is stored at unaligned offset {host:#x}"
            )
        if host + self.cluster_size > self._file_end:
            raise self._corrupt(
                f"guest cluster {cluster} (disk offset "
                f"{cluster << self.cluster_bits:#x}) is stored at {host:#x}, past "
                f"the end of the file ({self._file_end} bytes)",
                truncated=True,
            )
        # A cluster flagged "reads as zeros" may keep its host cluster (a
        # preallocation); that cluster must be in the file all the same.
        return (_ZERO if entry & OFLAG_ZERO else _DATA), host

    def _corrupt(self, what: str, *, truncated: bool = False) -> Qcow2Error:
        """The error for a damaged image, saying what is wrong and where."""
        verdict = "truncated or corrupt" if truncated else "corrupt"
        return Qcow2Error(f"{self.path}: {what}: the image is {verdict}")

    def check(self) -> None:
        """Check every L2 table the active L1 table names, and every entry in them.

        Raises ``Qcow2Error`` naming the first table or cluster that breaks
        the specification or lies (even partly) past the end of the file.
        """
        for l1_index, l1_entry in enumerate(self._l1):
            table_offset = l1_entry & OFFSET_MASK
            if not table_offset:
                continue
            table = self._l2_table(table_offset)
            first = l1_index << self._l2_bits
            for index, (entry,) in enumerate(_ENTRY.iter_unpack(table)):
                if entry:
                    self._classify(entry, first + index)

    def _l2_table(self, offset: int) -> bytearray:
        table = self._l2_tables.get(offset)
        if table is None:
            table = self._read_table(offset, "L2 table")
            if len(self._l2_tables) >= _TABLE_CACHE_SIZE:
                self._l2_tables.pop(next(iter(self._l2_tables)))
            self._l2_tables[offset] = table
        return table

    def _read_table(self, offset: int, what: str) -> bytearray:
        if offset & (self.cluster_size - 1) or offset >= _MAX_FILE_OFFSET:
            raise self._corrupt(
                f"{what} at offset {offset:#x} is not a cluster of the file"
            )
        table = bytearray(self.cluster_size)
        try:
            done = os.preadv(self._fd, [table], offset)
        except OSError as error:
            raise Qcow2Error(f"{self.path}: read failed: {error.strerror}") from None
        if done != self.cluster_size:
            raise self._corrupt(
                f"{what} at {offset:#x} lies past the end of the file "
                f"({self._file_end} bytes)",
                truncated=True,
            )
        return table

    def _pread_into(self, view: memoryview, offset: int) -> None:
        try:
            done = os.preadv(self._fd, [view], offset)
        except OSError as error:
            raise Qcow2Error(f"{self.path}: read failed: {error.strerror}") from None
        # Every cluster was checked to lie inside the file (see _classify):
        # a short read means the file has shrunk since.
        if done < len(view):
            raise self._corrupt(
                f"{len(view)} bytes at {offset:#x} lie past the end of the file "
                f"(only {done} could be read)",
                truncated=True,
            )

    def _compressed_extent(self, entry: int) -> tuple[int, int]:
        """The byte offset and the length of a compressed cluster's data."""
        shift = 62 - (self.cluster_bits - 8)
        offset = entry & ((1 << shift) - 1)
        sectors = ((entry >> shift) & ((1 << (self.cluster_bits - 8)) - 1)) + 1
        return offset, sectors * SECTOR_SIZE - (offset & (SECTOR_SIZE - 1))

    def _decompress(self, entry: int) -> bytes:
        cached = self._last_compressed
        if cached is not None and cached[0] == entry:
            return cached[1]
        offset, length = self._compressed_extent(entry)
        try:
            data = os.pread(self._fd, length, offset)
        except OSError as error:
            raise Qcow2Error(f"{self.path}: read failed: {error.strerror}") from None
        # QEMU writes raw deflate streams with a 4 KiB window; a decoder with
        # the largest window reads those and any other raw deflate stream.
        try:
            cluster = zlib.decompressobj(-15).decompress(data, self.cluster_size)
        except zlib.error as error:
            raise Qcow2Error(
                f"{self.path}: compressed cluster at {offset:#x} is corrupt: {error}"
            ) from None
        if len(cluster) != self.cluster_size:
            raise Qcow2Error(
                f"{self.path}: compressed cluster at {offset:#x} is corrupt "
                f"({len(cluster)} bytes instead of {self.cluster_size})"
            )
        self._last_compressed = (entry, cluster)
        return cluster

    # -- writing ----------------------------------------------------------------

    def _prepare_writes(self) -> None:
        header = self.header
        self._refcount_bytes = (1 << header.refcount_order) // 8
        self._refcounts_per_block = self.cluster_size // self._refcount_bytes
        raw = b"".join(
            self._read_table(
                header.refcount_table_offset + i * self.cluster_size, "refcount table"
            )
            for i in range(header.refcount_table_clusters)
        )
        self._reftable = [
            entry & REFTABLE_OFFSET_MASK for (entry,) in _ENTRY.iter_unpack(raw)
        ]
        self._refblocks: dict[int, bytearray] = {}
        self._next_cluster = -(-self.file_size // self.cluster_size)
        # Bits of autoclear_features name extensions this writer would not
        # keep up to date; the specification asks it to clear them.
        if header.autoclear_features:
            header.autoclear_features = 0
            self._pwrite(_ENTRY.pack(0), 88)

    def _write(self, offset: int, data: memoryview) -> None:
        cluster_size = self.cluster_size
        done = 0
        while done < len(data):
            guest = offset + done
            within = guest & (cluster_size - 1)
            length = min(cluster_size - within, len(data) - done)
            whole = length == cluster_size
            host = self._writable_cluster(guest >> self.cluster_bits, whole)
            self._pwrite(data[done : done + length], host + within)
            done += length

    def _writable_cluster(self, cluster: int, whole: bool) -> int:
        """The host offset where guest ``cluster`` may be written in place.

        Allocates, or copies on write, as the cluster's entry requires. When
        ``whole`` the caller overwrites the entire cluster, so its old
        content need not be carried over.
        """
        l1_index = cluster >> self._l2_bits
        l1_entry = self._l1[l1_index]
        table_offset = l1_entry & OFFSET_MASK
        if not table_offset:
            table_offset = self._allocate()
            self._pwrite(self._zero_cluster, table_offset)
            self._l2_tables[table_offset] = bytearray(self.cluster_size)
            self._l1[l1_index] = table_offset | OFLAG_COPIED
            self._pwrite(
                _ENTRY.pack(self._l1[l1_index]),
                self.header.l1_table_offset + 8 * l1_index,
            )
        elif not l1_entry & OFLAG_COPIED:
            raise Qcow2Error(
                f"{self.path}: cannot write guest cluster {cluster}: its L2 table "
                "is shared with a snapshot (not supported)"
            )
        table = self._l2_table(table_offset)
        index = cluster & self._l2_mask
        (entry,) = _ENTRY.unpack_from(table, index * 8)
        host = entry & OFFSET_MASK

        if entry & OFLAG_COMPRESSED:
            old = None if whole else self._decompress(entry)
            host = self._allocate()
            if old is not None:
                self._pwrite(old, host)
            self._release_compressed(entry)
        elif host and entry & OFLAG_COPIED:
            if not (self.version >= 3 and entry & OFLAG_ZERO):
                return host
            # A preallocated cluster flagged "reads as zeros": make it so.
            if not whole:
                self._pwrite(self._zero_cluster, host)
        elif host:
            # Shared with a snapshot: copy on write.
            zero = self.version >= 3 and entry & OFLAG_ZERO
            new = self._allocate()
            if not whole:
                self._pwrite(
                    self._zero_cluster if zero else self._read_cluster(host), new
                )
            self._change_refcount(host >> self.cluster_bits, -1)
            host = new
        else:
            # Never written (or flagged "reads as zeros" without a cluster).
            host = self._allocate()
            if not whole:
                self._pwrite(self._zero_cluster, host)

        _ENTRY.pack_into(table, index * 8, host | OFLAG_COPIED)
        self._pwrite(table[index * 8 : index * 8 + 8], table_offset + index * 8)
        return host

    def _read_cluster(self, host: int) -> bytes:
        buffer = bytearray(self.cluster_size)
        self._pread_into(memoryview(buffer), host)
        return bytes(buffer)

    def _allocate(self) -> int:
        """Append a cluster to the file, count it, and return its offset."""
        per_block = self._refcounts_per_block
        while True:
            cluster = self._next_cluster
            table_index = cluster // per_block
            if table_index >= len(self._reftable):
                raise Qcow2Error(
                    f"{self.path}: the refcount table is full; the image cannot grow"
                )
            self._next_cluster += 1
            if not self._reftable[table_index]:
                block = cluster << self.cluster_bits
                self._pwrite(self._zero_cluster, block)
                self._refblocks[block] = bytearray(self.cluster_size)
                self._reftable[table_index] = block
                self._pwrite(
                    _ENTRY.pack(block),
                    self.header.refcount_table_offset + 8 * table_index,
                )
                self._change_refcount(cluster, 1)
                continue
            if self._refcount(cluster):
                # Counted already although past the end of the file.
                continue
            self._change_refcount(cluster, 1)
            return cluster << self.cluster_bits

    def _refcount_slot(self, cluster: int) -> tuple[int, bytearray, int]:
        """(block offset, block, byte offset in it) of ``cluster``'s counter."""
        table_index, index = divmod(cluster, self._refcounts_per_block)
        block_offset = (
            self._reftable[table_index] if table_index < len(self._reftable) else 0
        )
        if not block_offset:
            return 0, bytearray(), 0
        block = self._refblocks.get(block_offset)
        if block is None:
            block = self._read_table(block_offset, "refcount block")
            if len(self._refblocks) >= _TABLE_CACHE_SIZE:
                self._refblocks.pop(next(iter(self._refblocks)))
            self._refblocks[block_offset] = block
        return block_offset, block, index * self._refcount_bytes

    def _refcount(self, cluster: int) -> int:
        block_offset, block, at = self._refcount_slot(cluster)
        if not block_offset:
            return 0
        return int.from_bytes(block[at : at + self._refcount_bytes], "big")

    def _change_refcount(self, cluster: int, delta: int) -> None:
        block_offset, block, at = self._refcount_slot(cluster)
        width = self._refcount_bytes
        old = int.from_bytes(block[at : at + width], "big") if block_offset else 0
        new = old + delta
        if not block_offset or new < 0 or new >= 1 << (8 * width):
            raise Qcow2Error(
                f"{self.path}: refcount of cluster {cluster} would become {new} "
                "(the image is corrupt)"
            )
        block[at : at + width] = new.to_bytes(width, "big")
        self._pwrite(block[at : at + width], block_offset + at)

    def _release_compressed(self, entry: int) -> None:
        """Drop one count from every cluster a compressed cluster's data touches."""
        offset, length = self._compressed_extent(entry)
        start = offset & ~(SECTOR_SIZE - 1)
        end = offset + length
        first, last = start >> self.cluster_bits, (end - 1) >> self.cluster_bits
        for cluster in range(first, last + 1):
            self._change_refcount(cluster, -1)

    def _pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        try:
            written = os.pwrite(self._fd, data, offset)
        except OSError as error:
            raise Qcow2Error(f"{self.path}: write failed: {error.strerror}") from None
        self._file_end = max(self._file_end, offset + written)

    # -- the L1 table -----------------------------------------------------------

    def _load_l1(self) -> list[int]:
        header = self.header
        length = header.l1_size * 8
        try:
            raw = os.pread(self._fd, length, header.l1_table_offset)
        except OSError as error:
            raise Qcow2Error(f"{self.path}: read failed: {error.strerror}") from None
        if len(raw) != length:
            raise self._corrupt(
                "the L1 table lies past the end of the file", truncated=True
            )
        entries = [entry for (entry,) in _ENTRY.iter_unpack(raw)]
        for index, entry in enumerate(entries):
            if entry & L1E_RESERVED_MASK:
                raise self._corrupt(
                    f"L1 entry {index} ({entry:#018x}) has reserved bits set"
                )
        return entries


def _validate(header: Qcow2Header, file_size: int, name: str, writable: bool) -> None:
    """Refuse headers this reader cannot honour, before any table is read."""
    if not MIN_CLUSTER_BITS <= header.cluster_bits <= MAX_CLUSTER_BITS:
        raise Qcow2Error(f"{name}: cluster_bits {header.cluster_bits} is out of range")
    cluster_size = 1 << header.cluster_bits
    if header.version == 3:
        if (
            header.header_length < V3_HEADER_LENGTH
            or header.header_length % 8
            or header.header_length > cluster_size
        ):
            raise Qcow2Error(f"{name}: bad header_length {header.header_length}")
        if header.refcount_order > 6:
            raise Qcow2Error(f"{name}: bad refcount_order {header.refcount_order}")
    if header.crypt_method:
        raise Qcow2Error(f"{name}: encrypted qcow2 images are not supported")
    if header.backing_file_offset:
        raise Qcow2Error(
            f"{name}: qcow2 images with a backing file are not supported; "
            "flatten it first with 'qemu-img convert -O qcow2 IMAGE NEW'"
        )

    features = header.incompatible_features
    unknown = features & ~_INCOMPAT_KNOWN
    if unknown:
        raise Qcow2Error(f"{name}: unknown incompatible qcow2 features {unknown:#x}")
    if features & INCOMPAT_CORRUPT:
        raise Qcow2Error(
            f"{name}: the image is marked corrupt; repair it with "
            "'qemu-img check -r all'"
        )
    if features & INCOMPAT_DATA_FILE:
        raise Qcow2Error(
            f"{name}: qcow2 images with an external data file are not supported"
        )
    if features & INCOMPAT_EXTL2:
        raise Qcow2Error(
            f"{name}: qcow2 images with extended L2 entries are not supported"
        )
    _validate_compression_type(header, name)
    if features & INCOMPAT_DIRTY:
        if writable:
            raise Qcow2Error(
                f"{name}: the image was not closed cleanly; repair it with "
                "'qemu-img check -r all' before changing it"
            )
        logger.warning("%s: the image was not closed cleanly (dirty bit set)", name)

    if header.size % SECTOR_SIZE:
        raise Qcow2Error(f"{name}: virtual size {header.size} is not a multiple of 512")
    per_l1_entry = cluster_size << (header.cluster_bits - 3)
    if header.l1_size * 8 > MAX_L1_BYTES or header.l1_size * per_l1_entry < header.size:
        raise Qcow2Error(
            f"{name}: an L1 table of {header.l1_size} entries does not fit a "
            f"{header.size}-byte disk"
        )
    for field in ("l1_table_offset", "refcount_table_offset"):
        if getattr(header, field) & (cluster_size - 1):
            raise Qcow2Error(f"{name}: {field} is not aligned to a cluster")
    if header.l1_table_offset + header.l1_size * 8 > file_size:
        raise Qcow2Error(
            f"{name}: the L1 table lies past the end of the file ({file_size} "
            "bytes): the image is truncated or corrupt"
        )
    reftable_end = (
        header.refcount_table_offset + header.refcount_table_clusters * cluster_size
    )
    if writable and reftable_end > file_size:
        raise Qcow2Error(
            f"{name}: the refcount table lies past the end of the file ({file_size} "
            "bytes): the image is truncated or corrupt"
        )

    if writable:
        if header.refcount_order < 3:
            raise Qcow2Error(
                f"{name}: refcounts narrower than 8 bits are not supported for writing"
            )
        reftable_bytes = header.refcount_table_clusters * cluster_size
        if not header.refcount_table_clusters or reftable_bytes > MAX_REFTABLE_BYTES:
            raise Qcow2Error(
                f"{name}: bad refcount_table_clusters {header.refcount_table_clusters}"
            )


def _validate_compression_type(header: Qcow2Header, name: str) -> None:
    """Refuse compression_type fields QEMU refuses; only zlib is read here.

    Incompatible feature bit 3 says the compression_type field is present
    (header_length above 104) and names a type other than zlib; a type other
    than zlib without the bit is just as invalid.
    """
    flagged = header.incompatible_features & INCOMPAT_COMPRESSION
    present = header.version >= 3 and header.header_length > _COMPRESSION_TYPE_OFFSET
    if flagged and not present:
        raise Qcow2Error(
            f"{name}: incompatible feature bit 3 (compression type) is set, but the "
            f"{header.header_length}-byte header has no compression_type field "
            "(the image is corrupt)"
        )
    if flagged and header.compression_type == COMPRESSION_ZLIB:
        raise Qcow2Error(
            f"{name}: incompatible feature bit 3 (compression type) is set with "
            "compression_type 0 (zlib), which must not carry it (the image is "
            "corrupt)"
        )
    if not flagged and header.compression_type != COMPRESSION_ZLIB:
        raise Qcow2Error(
            f"{name}: compression_type {header.compression_type} without "
            "incompatible feature bit 3 (the image is corrupt)"
        )
    if header.compression_type == COMPRESSION_ZSTD:
        raise Qcow2Error(
            f"{name}: compression type 1 (zstd) is not supported; convert the "
            "image with 'qemu-img convert -O qcow2 IMAGE NEW' (zlib or none)"
        )
    if header.compression_type != COMPRESSION_ZLIB:
        raise Qcow2Error(f"{name}: unknown compression type {header.compression_type}")
