"""Mounting checks every count and offset: a damaged ROFS fails clearly or reads consistently."""

import errno
import os
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osv.block import MemoryDisk
from osv.vfs import FsError, Vfs
from osv_mod_rofs import RoFs, RofsMountError, read_metadata

SUPERBLOCK = struct.Struct("<8Q")
INODE = struct.Struct("<4Q")
DIR, REG, LNK = 0x4000, 0x8000, 0xA000


def build(
    entries=(),
    symlinks=(),
    inodes=((DIR, 1, 0, 0),),
    data=b"",
    *,
    magic=0xDEADBEAD,
    version=1,
    block_size=512,
    first=None,
    blocks=None,
    counts=None,
    device_size=None,
):
    """ROFS bytes made by hand, so that any field can be made wrong.

    ``data`` fills the blocks after the superblock; the tables follow it.
    ``inodes`` are (mode, inode_no, data_offset, count).
    """
    tables = b"".join(struct.pack("<QH", n, len(name)) + name for n, name in entries)
    tables += b"".join(struct.pack("<H", len(target)) + target for target in symlinks)
    tables += b"".join(INODE.pack(*inode) for inode in inodes)
    data = data.ljust(-(-len(data) // 512) * 512, b"\0")
    first = 1 + len(data) // 512 if first is None else first
    blocks = -(-len(tables) // 512) if blocks is None else blocks
    counts = counts or (len(entries), len(symlinks), len(inodes))
    superblock = SUPERBLOCK.pack(magic, version, block_size, first, blocks, *counts)
    padded = tables.ljust(-(-len(tables) // 512) * 512, b"\0")
    image = superblock.ljust(512, b"\0") + data + padded
    if device_size is not None:
        image = image[:device_size].ljust(device_size, b"\0")
    return image


def mount_bytes(image):
    vfs = Vfs()
    vfs.mount(RoFs({"d": MemoryDisk(image, name="d")}), "d", "/", readonly=True)
    return vfs


def test_a_hand_made_image_mounts():
    image = build(
        entries=[(2, b"f"), (3, b"l")],
        symlinks=[b"f"],
        inodes=[(DIR, 1, 0, 2), (REG, 2, 1, 5), (LNK, 3, 0, 1)],
        data=b"hello",
    )
    vfs = mount_bytes(image)

    assert vfs.open("/l", os.O_RDONLY).read(10) == b"hello"


GOOD = dict(
    entries=[(2, b"f")],
    inodes=[(DIR, 1, 0, 1), (REG, 2, 1, 5)],
    data=b"hello",
)


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"magic": 0xDEADBEEF}, "no ROFS here"),
        ({"version": 2}, "ROFS version 2 is not supported"),
        ({"block_size": 4096}, "block size 4096"),
        ({"first": 0}, "do not lie inside"),
        ({"blocks": 0}, "do not lie inside"),
        ({"first": 2, "blocks": 10**6}, "do not lie inside"),
        ({"first": 1 << 62}, "do not lie inside"),
        ({"device_size": 1000}, "do not lie inside"),
        ({"device_size": 100}, "too small for a ROFS superblock"),
        ({"counts": (1, 0, 100)}, "cannot fit"),
        ({"counts": (1 << 60, 0, 2)}, "cannot fit"),
        ({"counts": (1, 1 << 63, 2)}, "cannot fit"),
        ({"counts": (1, 0, 0)}, "no inodes"),
        ({"entries": [(2, b"")]}, "invalid name"),
        ({"entries": [(2, b".")]}, "invalid name"),
        ({"entries": [(2, b"..")]}, "invalid name"),
        ({"entries": [(2, b"a/b")]}, "invalid name"),
        ({"entries": [(2, b"a\0b")]}, "invalid name"),
        ({"entries": [(3, b"f")]}, "names inode 3, outside 1..2"),
        ({"entries": [(0, b"f")]}, "names inode 0"),
        ({"inodes": [(DIR, 1, 0, 1), (REG, 7, 1, 5)]}, "claims number 7"),
        ({"inodes": [(DIR, 1, 0, 2), (REG, 2, 1, 5)]}, "lists entries 0..1"),
        ({"inodes": [(DIR, 1, 1 << 63, 1), (REG, 2, 1, 5)]}, "lists entries"),
        ({"inodes": [(DIR, 1, 0, 1), (REG, 2, 1, 5000)]}, "runs past the end"),
        ({"inodes": [(DIR, 1, 0, 1), (REG, 2, 1 << 60, 1)]}, "runs past the end"),
        ({"inodes": [(DIR, 1, 0, 1), (LNK, 2, 0, 1)]}, "names symlink 0"),
        ({"inodes": [(DIR, 1, 0, 1), (0x2000, 2, 0, 0)]}, "mode 0x2000"),
        ({"inodes": [(REG, 1, 1, 5), (REG, 2, 1, 5)]}, "root inode is not a directory"),
        ({"inodes": [(DIR, 1, 0, 1), (DIR, 2, 0, 1)]}, "share directory entries"),
        ({"entries": [(1, b"f")]}, "listed more than once"),
        ({"symlinks": [b"a\0"], "counts": (1, 1, 2)}, "NUL in its target"),
    ],
)
def test_each_kind_of_damage_fails_the_mount_with_its_reason(changes, complaint):
    image = build(**{**GOOD, **changes})

    with pytest.raises(RofsMountError, match=complaint) as caught:
        mount_bytes(image)
    assert caught.value.errno == errno.EINVAL
    assert isinstance(caught.value, FsError)


@pytest.mark.parametrize(
    ("offset", "value", "complaint"),
    [
        (8, 0xFFFF, "name of directory entry 0 is truncated"),
        (11, 0xFFFF, "target of symlink 0 is truncated"),
    ],
)
def test_a_length_running_past_the_tables_is_refused(offset, value, complaint):
    image = bytearray(
        build(
            entries=[(2, b"f")],
            symlinks=[b"x"],
            inodes=[(DIR, 1, 0, 1), (LNK, 2, 0, 1)],
            first=1,
        )
    )
    struct.pack_into("<H", image, 512 + offset, value)

    with pytest.raises(RofsMountError, match=complaint):
        mount_bytes(bytes(image))


def test_a_directory_listed_twice_is_refused():
    image = build(
        entries=[(3, b"x"), (3, b"y"), (2, b"a")],
        inodes=[(DIR, 1, 0, 3), (REG, 2, 1, 1), (DIR, 3, 0, 0)],
        data=b"a",
    )
    with pytest.raises(RofsMountError, match="listed more than once"):
        mount_bytes(image)


def test_an_inode_table_cut_off_by_the_block_count_is_refused():
    # A 490-byte name leaves no room for the inodes in the one block claimed.
    image = build(
        entries=[(2, b"n" * 490)],
        inodes=[(DIR, 1, 0, 1), (DIR, 2, 0, 0)],
        blocks=1,
    )
    with pytest.raises(RofsMountError, match="inode table is truncated"):
        mount_bytes(image)


def test_tables_larger_than_the_driver_accepts_are_refused():
    # The device is as large as the claim, so only the limit stops it.
    image = build(**GOOD)
    superblock = bytearray(image[:512])
    struct.pack_into("<Q", superblock, 32, (300 << 20) // 512)
    device = MemoryDisk(bytes(superblock), name="d")
    device.size = 301 << 20  # reads past the real bytes are never made

    with pytest.raises(RofsMountError, match="more than this driver accepts"):
        read_metadata(device)


# ---------------------------------------------------------------------------
# Mutated images: a clear mount error, or reads consistent with the image
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A realistic small tree written by mkfs: its bytes."""
    import io

    from osv.image import ManifestEntry
    from osv_mod_rofs import write_rofs

    directory = tmp_path_factory.mktemp("sample")
    entries = []
    spec = [
        ("/bin/prog", b"\x7fELF" + bytes(range(256)) * 9),
        ("/etc/hosts", b"127.0.0.1 localhost\n"),
        ("/etc/empty", b""),
        ("/usr/lib/libx.so.1", b"L" * 1500),
        ("/usr/lib/libx.so", "->libx.so.1"),
        ("/usr/share/doc/README", b"read me\n" * 40),
        ("/lib", "->/usr/lib"),
        ("/tmp", None),
        ("/dev", None),
    ]
    for number, (guest, value) in enumerate(spec):
        if value is None:
            entries.append(ManifestEntry(guest, "dir", None, None, "t"))
        elif isinstance(value, str):
            entries.append(ManifestEntry(guest, "symlink", None, value[2:], "t"))
        else:
            host = directory / f"f{number}"
            host.write_bytes(value)
            entries.append(ManifestEntry(guest, "file", str(host), None, "t"))
    out = io.BytesIO()
    write_rofs(entries, out)
    return out.getvalue()


def check_consistency(image):
    """Mount; on success walk everything and compare it with the image's bytes."""
    disk = MemoryDisk(image, name="d")
    try:
        vfs = Vfs()
        vfs.mount(RoFs({"d": disk}), "d", "/", readonly=True)
    except RofsMountError:
        return False
    metadata = read_metadata(disk)

    visited = 0
    pending = ["/"]
    while pending:
        path = pending.pop()
        directory = vfs.resolve(path)
        first_seen = {}
        for name, ino, d_type in directory.readdir():
            first_seen.setdefault(name, ino)
            visited += 1
            child = f"{path.rstrip('/')}/{name}"
            vnode = vfs.resolve(child, follow=False)
            assert vnode.ino == first_seen[name]
            inode = metadata.inode(vnode.ino)
            assert d_type == metadata.inode(ino).mode >> 12
            if vnode.is_dir:
                assert vfs.resolve(child + "/..").ino == directory.ino
                if ino == vnode.ino:
                    pending.append(child)
            elif vnode.is_symlink:
                assert vfs.readlink(child) == os.fsdecode(
                    metadata.symlinks[inode.data_offset]
                )
            else:
                file = vfs.open(child, os.O_RDONLY)
                start = inode.data_offset * 512
                assert (
                    file.pread(inode.count + 10, 0)
                    == image[start : start + inode.count]
                )
                file.close()
    assert visited <= len(metadata.entries)
    vfs.statfs("/")
    return True


def test_the_sample_is_consistent(sample):
    assert check_consistency(sample)


def _mutations(max_size):
    """Byte edits where ROFS keeps its metadata: the superblock and the tables."""
    return st.lists(
        st.tuples(
            st.integers(0, 63) | st.integers(-700, -1),
            st.integers(0, 255) | st.sampled_from([0xFF, 0x7F, 0x80, 0x00, 0x01]),
        ),
        min_size=1,
        max_size=max_size,
    )


def _mutate(sample, edits, cut):
    image = bytearray(sample)
    for offset, value in edits:
        image[offset] = value
    if cut is not None:
        del image[cut:]
    return bytes(image)


@settings(
    max_examples=3000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edits=_mutations(4), cut=st.none() | st.integers(0, 6000))
def test_thousands_of_mutated_images_fail_clearly_or_read_consistently(
    sample, edits, cut
):
    check_consistency(_mutate(sample, edits, cut))


@pytest.mark.slow
@settings(
    max_examples=50_000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edits=_mutations(12), cut=st.none() | st.integers(0, 6000))
def test_tens_of_thousands_of_mutated_images_fail_clearly_or_read_consistently(
    sample, edits, cut
):
    check_consistency(_mutate(sample, edits, cut))


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    counts=st.tuples(*[st.integers(0, 1 << 64 - 1) | st.integers(0, 4000)] * 3),
    first=st.integers(0, 1 << 64 - 1) | st.integers(0, 20),
    blocks=st.integers(0, 1 << 64 - 1) | st.integers(0, 20),
)
def test_any_superblock_is_checked_before_memory_is_spent_on_it(
    sample, counts, first, blocks
):
    image = bytearray(sample)
    struct.pack_into("<5Q", image, 24, first, blocks, *counts)

    tracemalloc.start()
    try:
        check_consistency(bytes(image))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Whatever the counts claim, what a mount holds is bounded by the device.
    assert peak < 64 * len(image) + (1 << 20)
