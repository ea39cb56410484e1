"""Mount errors stay one short line, whatever bytes a damaged ROFS holds."""

import struct

import pytest

from osv.block import MemoryDisk
from osv_mod_rofs import RofsMountError, read_metadata

SUPERBLOCK = struct.Struct("<8Q")
INODE = struct.Struct("<4Q")
DIR = 0x4000


def image_with_entry_name(name: bytes) -> bytes:
    """A ROFS whose root directory lists one entry, a directory called ``name``."""
    tables = struct.pack("<QH", 2, len(name)) + name
    tables += INODE.pack(DIR, 1, 0, 1) + INODE.pack(DIR, 2, 1, 0)
    blocks = -(-len(tables) // 512)
    superblock = SUPERBLOCK.pack(0xDEADBEAD, 1, 512, 1, blocks, 1, 0, 2)
    return superblock.ljust(512, b"\0") + tables.ljust(blocks * 512, b"\0")


def mount_error(image: bytes) -> str:
    with pytest.raises(RofsMountError) as caught:
        read_metadata(MemoryDisk(image, name="vblk0.1"))
    return str(caught.value)


def test_a_name_made_huge_by_a_damaged_length_is_cut_short_in_the_message():
    # What a damaged length field makes of a name: the real name, then
    # whatever bytes follow it in the tables (here zeros, which are invalid).
    name = b"mnttab\t" + bytes(60000 - 7)
    image = image_with_entry_name(name)

    message = mount_error(image)

    assert "directory entry 0 has an invalid name" in message
    assert "b'mnttab\\t" in message
    assert "... (60000 bytes)" in message
    assert len(message) < 400
    assert "\n" not in message


def test_a_short_invalid_name_is_shown_whole():
    message = mount_error(image_with_entry_name(b"a/b"))

    assert message.endswith("directory entry 0 has an invalid name b'a/b'")


def test_a_name_of_exactly_the_shown_length_is_not_marked_as_cut():
    name = b"x" * 63 + b"/"

    message = mount_error(image_with_entry_name(name))

    assert message.endswith(repr(name))
    assert "..." not in message
