"""mkfs writes ROFS byte for byte as OSv's gen-rofs-img.py does for the same manifest."""

import io
import os
import struct
import subprocess
import sys

import pytest

from osv.block import MemoryDisk
from osv.image import ManifestEntry, ManifestText, read_manifest
from osv_mod_rofs import (
    ROFS_MAGIC,
    ROFS_TIMES_MAGIC,
    RoFs,
    RofsMkfsError,
    Superblock,
    read_metadata,
    write_rofs,
)

# The records, encoded here from the format's description (superblock: eight
# u64; inode: mode as u64, inode_no, data_offset, count; directory entry:
# u64 inode, u16 length, name; symlink: u16 length, target).
SUPERBLOCK = struct.Struct("<8Q")
INODE = struct.Struct("<4Q")


def dirent(inode, name):
    return struct.pack("<QH", inode, len(name)) + name


def symlink(target):
    return struct.pack("<H", len(target)) + target


def test_the_worked_example_gives_exactly_the_documented_bytes(tree):
    # /hello (100 bytes), /etc/hosts (600 bytes), /lib -> /usr/lib, in that
    # order. Inodes: 1 /, 2 /hello, 3 /etc, 4 /etc/hosts, 5 /lib. Entry
    # table: hosts->4, hello->2, etc->3, lib->5 (the deeper directory first).
    hello, hosts = b"H" * 100, bytes(range(200)) * 3
    image = tree.image({"/hello": hello, "/etc/hosts": hosts, "/lib": "->/usr/lib"})

    tables = (
        dirent(4, b"hosts")
        + dirent(2, b"hello")
        + dirent(3, b"etc")
        + dirent(5, b"lib")
        + symlink(b"/usr/lib")
        + INODE.pack(0x4000, 1, 1, 3)
        + INODE.pack(0x8000, 2, 1, 100)
        + INODE.pack(0x4000, 3, 0, 1)
        + INODE.pack(0x8000, 4, 2, 600)
        + INODE.pack(0xA000, 5, 0, 1)
    )
    assert len(tables) == 226
    expected = (
        SUPERBLOCK.pack(0xDEADBEAD, 1, 512, 4, 1, 4, 1, 5).ljust(512, b"\0")
        + hello.ljust(512, b"\0")
        + hosts.ljust(1024, b"\0")
        + tables.ljust(512, b"\0")
    )
    assert len(expected) == 2560
    assert image == expected


def test_tables_ending_on_a_block_boundary_get_a_whole_extra_zero_block(tree):
    # Root plus four files: 5 inodes (160 bytes) and four entries of 10 bytes
    # plus a 78-byte name (352 bytes): exactly 512 bytes of tables.
    names = [f"{letter}" * 78 for letter in "abcd"]
    image = tree.image({f"/{name}": b"" for name in names})

    superblock = Superblock.unpack(image)
    assert superblock.structure_info_first_block == 1
    assert superblock.structure_info_blocks_count == 1
    # Superblock, one block of tables, and the extra block OSv writes.
    assert len(image) == 3 * 512
    assert image[1024:] == bytes(512)
    # The last inode record (the fourth, empty, file) ends the table block.
    assert image[1024 - 32 : 1024] == INODE.pack(0x8000, 5, 1, 0)


def test_a_directory_listed_later_keeps_the_place_of_its_first_mention(tree):
    # /b/x makes /b before /a exists; the later "/b" line changes nothing,
    # and the replaced /a keeps its first place.
    entries = tree.entries(
        {"/b/x": b"1", "/a": b"old", "/b": None, "/c": "->/b"}
    ) + tree.entries({"/a": b"new!"})
    out = io.BytesIO()
    write_rofs(entries, out)
    metadata = read_metadata(MemoryDisk(out.getvalue()))

    root = metadata.inode(1)
    names = [entry.name for entry in metadata.children(root)]
    assert names == [b"b", b"a", b"c"]
    a = metadata.inode(metadata.children(root)[1].inode_no)
    assert a.count == 4


def test_inode_numbers_are_preorder_and_entries_postorder(tree):
    image = tree.image(
        {"/d1/f1": b"1", "/d1/d2/f2": b"22", "/f3": b"333", "/d1/f4": b"4444"}
    )
    metadata = read_metadata(MemoryDisk(image))

    # Pre-order: / 1, d1 2, f1 3, d2 4, f2 5, f4 6, f3 7.
    assert [inode.mode for inode in metadata.inodes] == [
        0x4000, 0x4000, 0x8000, 0x4000, 0x8000, 0x8000, 0x8000,
    ]  # fmt: skip
    # Post-order: d2's entries, then d1's, then the root's.
    assert [(e.name, e.inode_no) for e in metadata.entries] == [
        (b"f2", 5),
        (b"f1", 3),
        (b"d2", 4),
        (b"f4", 6),
        (b"d1", 2),
        (b"f3", 7),
    ]
    # File data is laid out in the order the walk meets the files.
    assert [metadata.inode(n).data_offset for n in (3, 5, 6, 7)] == [1, 2, 3, 4]


def test_empty_files_take_no_block_and_full_blocks_get_no_padding(tree):
    image = tree.image({"/empty": b"", "/full": b"F" * 1024, "/last": b""})
    metadata = read_metadata(MemoryDisk(image))

    empty, full, last = (metadata.inode(n) for n in (2, 3, 4))
    assert (empty.data_offset, empty.count) == (1, 0)
    assert (full.data_offset, full.count) == (1, 1024)
    # The last empty file points where the tables start.
    assert (last.data_offset, last.count) == (3, 0)
    assert metadata.superblock.structure_info_first_block == 3
    assert image[512:1536] == b"F" * 1024


def test_an_empty_manifest_gives_a_root_with_no_entries(tree):
    image = tree.image({})

    superblock = Superblock.unpack(image)
    assert (superblock.inodes_count, superblock.directory_entries_count) == (1, 0)
    assert image[512:544] == INODE.pack(0x4000, 1, 0, 0)


def test_mkfs_reads_manifests_in_osv_syntax(tmp_path):
    (tmp_path / "hello").write_bytes(b"H" * 100)
    (tmp_path / "hosts").write_bytes(bytes(range(200)) * 3)
    manifest = ManifestText(
        "[manifest]\n/hello: hello\n/etc/hosts: hosts\n/lib: ->/usr/lib\n"
    )
    entries = read_manifest(manifest, base_dir=tmp_path)

    out = io.BytesIO()
    summary = RoFs.mkfs(entries, out)

    assert len(out.getvalue()) == summary.image_bytes == 2560
    assert (summary.inodes, summary.directory_entries, summary.symlinks) == (5, 4, 1)
    assert (summary.files, summary.file_bytes) == (2, 700)
    assert Superblock.unpack(out.getvalue()).magic == ROFS_MAGIC


def test_mkfs_starts_where_the_output_is_positioned(tree):
    out = io.BytesIO()
    out.write(b"PREFIX")
    write_rofs(tree.entries({"/a": b"x"}), out, times=False)

    assert out.getvalue()[:6] == b"PREFIX"
    assert out.getvalue()[6:] == tree.image({"/a": b"x"})


def test_a_tree_deeper_than_pythons_recursion_limit_is_written(tree):
    path = "/" + "/".join(["d"] * 2000) + "/leaf"
    image = tree.image({path: b"deep"})

    metadata = read_metadata(MemoryDisk(image))
    assert len(metadata.inodes) == 2002
    assert metadata.inode(2002).count == 4


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ({"/f": b"x", "/f/g": b"y"}, "/f is a file or symlink, not a directory"),
        ({"/l": "->/x", "/l/d": None}, "/l is a file or symlink"),
    ],
)
def test_entries_below_a_file_are_refused(tree, spec, complaint):
    with pytest.raises(RofsMkfsError, match=complaint):
        tree.image(spec)


def test_an_unreadable_host_file_is_a_mkfs_error(tmp_path):
    entry = ManifestEntry("/x", "file", str(tmp_path / "missing"), None, "m:3")

    with pytest.raises(RofsMkfsError, match="m:3: cannot read .*missing"):
        write_rofs([entry], io.BytesIO())


def test_the_root_cannot_be_a_file(tmp_path):
    entry = ManifestEntry("/", "file", "/etc/hostname", None, "m:1")

    with pytest.raises(RofsMkfsError, match="/ can only be a directory"):
        write_rofs([entry], io.BytesIO())


# OSv's own writer as the oracle, where an OSv source tree is at hand:
# OSV_SOURCE=/path/to/osv python3 -m pytest tests/test_mkfs.py
OSV_SOURCE = os.environ.get("OSV_SOURCE")


@pytest.mark.skipif(
    not OSV_SOURCE, reason="set OSV_SOURCE to an OSv checkout to compare with it"
)
def test_the_same_manifest_gives_the_bytes_of_osvs_gen_rofs_img(tmp_path):
    # Files, empty files, a file of whole blocks, directories named on their
    # own line, symlinks, and names whose tables end on a block boundary.
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    for name, size in [("a", 100), ("b", 0), ("c", 1024), ("sub/d", 5000)]:
        (tree / name).write_bytes(bytes((i * 13) % 251 for i in range(size)))
    (tree / "sub" / "deeper" / ("n" * 200)).write_bytes(b"long name")
    manifest = tmp_path / "usr.manifest"
    manifest.write_text(
        f"[manifest]\n/x/a: {tree}/a\n/x/b: {tree}/b\n/sub: {tree}/sub\n"
        f"/sub/deeper/{'n' * 200}: {tree}/sub/deeper/{'n' * 200}\n"
        f"/c: {tree}/c\n/lib: ->/usr/lib\n/sub/d: {tree}/sub/d\n/x/l: ->../c\n"
    )
    theirs = tmp_path / "osv.img"
    subprocess.run(
        [
            sys.executable,
            os.path.join(OSV_SOURCE, "scripts", "gen-rofs-img.py"),
            "-o",
            str(theirs),
            "-m",
            str(manifest),
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )

    ours = io.BytesIO()
    write_rofs(read_manifest(manifest), ours, times=False)

    assert ours.getvalue() == theirs.read_bytes()


def test_the_time_table_follows_osvs_tables_and_dates_every_inode(
    tmp_path, monkeypatch
):
    (tmp_path / "tree").mkdir()
    (tmp_path / "a").write_bytes(b"A" * 10)
    (tmp_path / "b").write_bytes(b"")
    os.utime(tmp_path / "a", ns=(1, 1_600_000_000_123_456_789))
    os.utime(tmp_path / "b", ns=(1, 1_500_000_000_000_000_001))
    os.utime(tmp_path / "tree", ns=(1, 1_400_000_000_000_000_000))
    entries = [
        ManifestEntry("/d", "dir", str(tmp_path / "tree"), None, "test"),
        ManifestEntry("/d/a", "file", str(tmp_path / "a"), None, "test"),
        ManifestEntry("/b", "file", str(tmp_path / "b"), None, "test"),
        ManifestEntry("/l", "symlink", None, "d/a", "test"),
    ]
    plain, timed = io.BytesIO(), io.BytesIO()
    write_rofs(entries, plain, times=False)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")
    write_rofs(entries, timed)

    # OSv's bytes, then the table where OSv's padding was.
    first = Superblock.unpack(plain.getvalue()).structure_info_first_block
    table = timed.getvalue().index(ROFS_TIMES_MAGIC, first * 512)
    assert timed.getvalue()[:table] == plain.getvalue()[:table]
    assert plain.getvalue()[table:] == bytes(len(plain.getvalue()) - table)
    metadata = read_metadata(MemoryDisk(timed.getvalue()))
    # Inodes in pre-order: / (no host: the build time), /d, /d/a, /b, /l.
    assert metadata.mtimes == [
        1_234_567_890_000_000_000,
        1_400_000_000_000_000_000,
        1_600_000_000_123_456_789,
        1_500_000_000_000_000_001,
        1_234_567_890_000_000_000,
    ]
    assert read_metadata(MemoryDisk(plain.getvalue())).mtimes is None


def test_times_before_1970_are_kept(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "old").write_bytes(b"old")
    os.utime(tmp_path / "old", ns=(1, -86_400_000_000_007))
    os.utime(tmp_path / "dir", ns=(1, -5_000_000_000))
    out = io.BytesIO()
    write_rofs(
        [
            ManifestEntry("/old", "file", str(tmp_path / "old"), None, "t"),
            ManifestEntry("/dir", "dir", str(tmp_path / "dir"), None, "t"),
        ],
        out,
    )

    mtimes = read_metadata(MemoryDisk(out.getvalue())).mtimes
    assert mtimes[1:] == [-86_400_000_000_007, -5_000_000_000]
