"""The image descriptor: what an image needs from ``osv run`` and how it was made."""

from __future__ import annotations

import json
import logging
import struct
import zlib
from typing import Any

from osv._record import FrozenRecord

from ._errors import ImageError

logger = logging.getLogger(__name__)

# Where OSv keeps its compressed kernel (64 KiB into usr.img) our images keep
# this descriptor instead, since our kernel lives in the host, not in the image.
#
# Layout (little-endian), at DESCRIPTOR_OFFSET of the image:
#
#     offset  size  field
#     0       8     magic    b"OSVPYIMG"
#     8       4     version  u32, DESCRIPTOR_VERSION
#     12      4     length   u32, number of JSON bytes after the header
#     16      4     crc32    u32, zlib.crc32 of those JSON bytes
#     20      ...   JSON     UTF-8 object, keys sorted, no whitespace
#
# Why it looks like this:
#
# * The magic tells our images apart from OSv's own (which hold ELF code
#   there) and from garbage, before anything else is trusted.
# * The length bounds every read: a reader never scans for an end marker and
#   never reads past the reserved area, whatever the bytes say.
# * The CRC catches a torn or bit-flipped descriptor that would still be
#   valid JSON (a changed digit in a version), which JSON parsing cannot.
# * JSON keeps the record readable with `dd | strings` and lets later
#   versions add keys: a reader keeps keys it does not know in `extra`
#   instead of failing, so adding a key does not bump the version.
#   The version changes only when an old reader would misread the new format;
#   a reader refuses any version other than its own.
# * The JSON object is written with sorted keys and no spaces, so the same
#   descriptor always gives the same bytes (reproducible images).
DESCRIPTOR_MAGIC = b"OSVPYIMG"
DESCRIPTOR_VERSION = 1
DESCRIPTOR_HEADER = struct.Struct("<8sIII")

# The descriptor lives between 64 KiB and the root partition at 2 MiB.
DESCRIPTOR_OFFSET = 64 * 1024
DESCRIPTOR_MAX_SIZE = 2 * 1024 * 1024 - DESCRIPTOR_OFFSET

_KNOWN_KEYS = frozenset({"kernel_version", "fs_type", "built_by", "modules", "created"})


def _creation_time() -> str:
    """Now in UTC, or SOURCE_DATE_EPOCH when set, for reproducible images."""
    # Imported here: only building an image dates it; booting one reads it.
    import datetime

    from ._times import build_time_ns

    seconds = build_time_ns() // 1_000_000_000
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# Stands for a field left out, so that None read from an image's JSON is still
# refused as a value rather than taken for "use the default".
_UNSET: Any = object()


class ImageDescriptor(FrozenRecord):
    """What an image was assembled with and what it needs to boot.

    ``kernel_version`` is the osv-core version the image needs, ``modules``
    maps each module's name to the version the image was assembled with,
    ``fs_type`` names the root file system's type, ``built_by`` says what made
    the image, ``created`` is an ISO 8601 UTC time, and ``extra`` holds keys
    written by a newer osv-core that this one does not know.
    """

    __slots__ = ("kernel_version", "fs_type", "built_by", "modules", "created", "extra")

    def __init__(
        self,
        kernel_version: str,
        fs_type: str,
        built_by: str,
        modules: dict[str, str] = _UNSET,
        created: str = _UNSET,
        extra: dict[str, Any] = _UNSET,
    ) -> None:
        define = object.__setattr__
        define(self, "kernel_version", kernel_version)
        define(self, "fs_type", fs_type)
        define(self, "built_by", built_by)
        define(self, "modules", {} if modules is _UNSET else modules)
        define(self, "created", _creation_time() if created is _UNSET else created)
        define(self, "extra", {} if extra is _UNSET else extra)

        for field in ("kernel_version", "fs_type", "built_by", "created"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise ImageError(
                    f"image descriptor: {field} must be a non-empty string"
                )
        if not isinstance(self.modules, dict) or not all(
            isinstance(name, str) and name and isinstance(version, str) and version
            for name, version in self.modules.items()
        ):
            raise ImageError(
                "image descriptor: modules must map non-empty names to non-empty versions"
            )
        if not isinstance(self.extra, dict):
            raise ImageError("image descriptor: extra must be a dict")
        clashing = _KNOWN_KEYS.intersection(self.extra)
        if clashing:
            raise ImageError(
                f"image descriptor: extra repeats known keys {sorted(clashing)}"
            )

    def to_bytes(self) -> bytes:
        """The descriptor as stored in an image: header followed by JSON."""
        document = dict(self.extra)
        document.update(
            kernel_version=self.kernel_version,
            fs_type=self.fs_type,
            built_by=self.built_by,
            modules=self.modules,
            created=self.created,
        )
        try:
            payload = json.dumps(
                document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode()
        except (TypeError, ValueError) as error:
            raise ImageError(
                f"image descriptor: cannot encode as JSON: {error}"
            ) from None

        if DESCRIPTOR_HEADER.size + len(payload) > DESCRIPTOR_MAX_SIZE:
            raise ImageError(
                f"image descriptor: {len(payload)} bytes of JSON do not fit in "
                f"the {DESCRIPTOR_MAX_SIZE} bytes reserved for it"
            )
        header = DESCRIPTOR_HEADER.pack(
            DESCRIPTOR_MAGIC, DESCRIPTOR_VERSION, len(payload), zlib.crc32(payload)
        )
        return header + payload

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ImageDescriptor:
        """Parse a descriptor; *data* may run on past its end (the reserved area).

        Raises ``ImageError`` for a bad magic, version, length, checksum or JSON.
        """
        data = bytes(data[:DESCRIPTOR_MAX_SIZE])
        if len(data) < DESCRIPTOR_HEADER.size:
            raise ImageError("image descriptor: truncated header")
        magic, version, length, checksum = DESCRIPTOR_HEADER.unpack_from(data)
        if magic != DESCRIPTOR_MAGIC:
            raise ImageError(
                f"image descriptor: bad magic {magic!r} (expected {DESCRIPTOR_MAGIC!r}); "
                "this is not an image made by osv build"
            )
        if version != DESCRIPTOR_VERSION:
            raise ImageError(
                f"image descriptor: format version {version} is not supported "
                f"(this osv-core reads version {DESCRIPTOR_VERSION})"
            )
        end = DESCRIPTOR_HEADER.size + length
        if end > DESCRIPTOR_MAX_SIZE or end > len(data):
            raise ImageError(f"image descriptor: length {length} runs past its area")
        payload = data[DESCRIPTOR_HEADER.size : end]
        if zlib.crc32(payload) != checksum:
            raise ImageError("image descriptor: checksum mismatch (corrupted image?)")

        document = _decode_json(payload)
        missing = sorted(_KNOWN_KEYS - document.keys())
        if missing:
            raise ImageError(f"image descriptor: missing keys {missing}")
        extra = {
            key: value for key, value in document.items() if key not in _KNOWN_KEYS
        }
        if extra:
            logger.debug("image descriptor: keeping unknown keys %s", sorted(extra))
        return cls(
            kernel_version=document["kernel_version"],
            fs_type=document["fs_type"],
            built_by=document["built_by"],
            modules=document["modules"],
            created=document["created"],
            extra=extra,
        )


def _decode_json(payload: bytes) -> dict[str, Any]:
    def refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        document = dict(pairs)
        if len(document) != len(pairs):
            raise ValueError("duplicate keys")
        return document

    try:
        document = json.loads(payload.decode(), object_pairs_hook=refuse_duplicate_keys)
    except (ValueError, RecursionError) as error:
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; deeply
        # nested arrays exhaust the parser's recursion instead.
        raise ImageError(f"image descriptor: invalid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ImageError("image descriptor: the JSON document is not an object")
    return document
