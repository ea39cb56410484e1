"""bootfs blobs: exact bytes, round trips, and a reader that only fails with BootfsError."""

import io
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osv.image import (
    BOOTFS_RECORD_SIZE,
    BootfsError,
    BootfsRecord,
    ImageError,
    ManifestEntry,
    decode_time_runs,
    encode_time_runs,
    read_bootfs,
    write_bootfs,
)


def pack(entries):
    out = io.BytesIO()
    written = write_bootfs(entries, out)
    blob = out.getvalue()
    assert written == len(blob)
    return blob


def name_field(name: bytes) -> bytes:
    return name + bytes(111 - len(name))


@pytest.fixture
def hello(tmp_path):
    path = tmp_path / "hello"
    path.write_bytes(b"hi\n")
    return str(path)


def test_blob_has_the_exact_layout_of_osv_mkbootfs(hello):
    entries = [
        ManifestEntry("/tmp", "dir", "/tmp", None, "m:1"),
        ManifestEntry("/hello", "file", hello, None, "m:2"),
        ManifestEntry("/etc/mnttab", "symlink", None, "/proc/mounts", "m:3"),
    ]

    blob = pack(entries)

    # Worked out by hand from the format: 3 records + terminator = 512 bytes of
    # metadata, so content starts at 512.  Each record is u64 size, u64 offset
    # (little-endian), i8 type, 111-byte NUL-padded name.
    expected = (
        # /tmp: a directory gets a trailing "/", size 0, the running offset 512.
        b"\x00\x00\x00\x00\x00\x00\x00\x00"
        + b"\x00\x02\x00\x00\x00\x00\x00\x00"
        + b"\x00"
        + name_field(b"/tmp/")
        # /hello: 3 bytes of content at 512.
        + b"\x03\x00\x00\x00\x00\x00\x00\x00"
        + b"\x00\x02\x00\x00\x00\x00\x00\x00"
        + b"\x00"
        + name_field(b"/hello")
        # /etc/mnttab: type 1, content "/proc/mounts" + NUL = 13 bytes at 515.
        + b"\x0d\x00\x00\x00\x00\x00\x00\x00"
        + b"\x03\x02\x00\x00\x00\x00\x00\x00"
        + b"\x01"
        + name_field(b"/etc/mnttab")
        # The all-zero terminator record.
        + bytes(128)
        # Contents in record order; the directory contributes nothing.
        + b"hi\n"
        + b"/proc/mounts\x00"
    )
    assert blob == expected
    assert len(blob) == 528


def test_written_blob_reads_back_with_its_contents(hello):
    entries = [
        ManifestEntry("/tmp", "dir", "/tmp", None, "m:1"),
        ManifestEntry("/hello", "file", hello, None, "m:2"),
        ManifestEntry("/etc/mnttab", "symlink", None, "/proc/mounts", "m:3"),
    ]
    blob = pack(entries)

    records = read_bootfs(blob)

    assert records == [
        BootfsRecord("/tmp/", 0, 512, 0),
        BootfsRecord("/hello", 0, 512, 3),
        BootfsRecord("/etc/mnttab", 1, 515, 13),
    ]
    assert [r.is_directory for r in records] == [True, False, False]
    assert [r.is_symlink for r in records] == [False, False, True]
    assert bytes(records[1].content(blob)) == b"hi\n"
    assert bytes(records[2].content(blob)) == b"/proc/mounts\0"


def test_empty_manifest_is_just_the_terminator():
    blob = pack([])

    assert blob == bytes(128)
    assert read_bootfs(blob) == []


def test_name_of_110_bytes_fits_and_111_does_not(hello):
    fits = "/" + "a" * 109
    too_long = "/" + "a" * 110

    records = read_bootfs(pack([ManifestEntry(fits, "file", hello, None, "m:1")]))
    assert records[0].name == fits

    with pytest.raises(BootfsError, match="m:1: .* 111 bytes long"):
        pack([ManifestEntry(too_long, "file", hello, None, "m:1")])


def test_directory_slash_counts_towards_the_name_limit():
    name = "/" + "d" * 109  # 110 bytes, 111 with the directory's "/"

    with pytest.raises(BootfsError, match="at most 110"):
        pack([ManifestEntry(name, "dir", "/", None, "m:1")])


def test_names_are_measured_in_utf8_bytes(hello):
    name = "/" + "é" * 55  # 111 bytes in UTF-8

    with pytest.raises(BootfsError):
        pack([ManifestEntry(name, "file", hello, None, "m:1")])


def test_same_guest_path_twice_is_refused(hello):
    entry = ManifestEntry("/hello", "file", hello, None, "m:1")

    with pytest.raises(BootfsError, match="already packed from m:1"):
        pack([entry, ManifestEntry("/hello", "symlink", None, "/x", "m:2")])


def test_missing_host_file_is_a_bootfs_error(tmp_path):
    entry = ManifestEntry("/x", "file", str(tmp_path / "absent"), None, "m:7")

    with pytest.raises(BootfsError, match="^m:7: cannot read"):
        pack([entry])


def test_large_file_is_copied_whole(tmp_path):
    data = bytes(range(256)) * 9000  # more than one copy chunk
    path = tmp_path / "big"
    path.write_bytes(data)

    blob = pack([ManifestEntry("/big", "file", str(path), None, "m:1")])
    (record,) = read_bootfs(blob)

    assert bytes(record.content(blob)) == data


def record(size, offset, kind, name):
    return struct.pack("<QQb111s", size, offset, kind, name)


@pytest.mark.parametrize(
    ("blob", "complaint"),
    [
        (b"", "before its terminating record"),
        (record(0, 256, 0, b"/a/"), "before its terminating record"),
        (record(5, 256, 0, b"/a") + bytes(128), "outside the content area"),
        (record(0, 300, 0, b"/a/") + bytes(128), "outside the content area"),
        (record(0, 0, 0, b"/a/") + bytes(128), "outside the content area"),
        (record(2**64 - 1, 256, 0, b"/a") + bytes(128), "outside the content area"),
        (record(0, 256, 2, b"/a") + bytes(128), "unknown type 2"),
        (record(0, 256, 0, b"/" + b"a" * 110) + bytes(128), "not NUL-terminated"),
        (record(0, 256, 0, b"relative") + bytes(128), "not an absolute path"),
        (record(0, 256, 0, b"/\xff") + bytes(128), "not UTF-8"),
        (record(1, 256, 0, b"/d/") + bytes(128) + b"x", "a directory must be"),
        (record(2, 256, 1, b"/l") + bytes(128) + b"ab", "not NUL-terminated"),
        (record(3, 256, 1, b"/l") + bytes(128) + b"a\0b", "not NUL-terminated"),
        (record(1, 256, 1, b"/l") + bytes(128) + b"\0", "not NUL-terminated"),
    ],
)
def test_malformed_blob_is_a_bootfs_error(blob, complaint):
    with pytest.raises(BootfsError, match=complaint):
        read_bootfs(blob)


@pytest.fixture(scope="module")
def sample_blob(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bootfs")
    (directory / "a").write_bytes(b"alpha")
    (directory / "b").write_bytes(b"")
    return pack(
        [
            ManifestEntry("/usr", "dir", str(directory), None, "m:1"),
            ManifestEntry("/usr/a", "file", str(directory / "a"), None, "m:2"),
            ManifestEntry("/usr/b", "file", str(directory / "b"), None, "m:3"),
            ManifestEntry("/lnk", "symlink", None, "/usr/a", "m:4"),
        ]
    )


def check_records_within(blob, records):
    for parsed in records:
        assert parsed.name.startswith("/")
        assert parsed.type in (0, 1)
        assert 0 <= parsed.offset and parsed.offset + parsed.size <= len(blob)


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=700), st.integers(0, 255)),
        max_size=8,
    ),
    cut=st.none() | st.integers(min_value=0, max_value=700),
)
def test_mutated_blob_reads_or_fails_only_with_bootfs_error(sample_blob, edits, cut):
    blob = bytearray(sample_blob)
    for position, value in edits:
        if position < len(blob):
            blob[position] = value
    if cut is not None:
        del blob[cut:]

    try:
        records = read_bootfs(bytes(blob))
    except BootfsError:
        return
    check_records_within(blob, records)


@settings(max_examples=300)
@given(st.binary(max_size=1024))
def test_random_bytes_read_or_fail_only_with_bootfs_error(blob):
    try:
        records = read_bootfs(blob)
    except BootfsError:
        return
    check_records_within(blob, records)


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**64 - 1),
            st.integers(0, 2**64 - 1),
            st.integers(-128, 127),
            st.binary(min_size=1, max_size=111),
        ),
        max_size=4,
    ),
    st.binary(max_size=64),
)
def test_arbitrary_records_read_or_fail_only_with_bootfs_error(fields, tail):
    blob = b"".join(struct.pack("<QQb111s", *f) for f in fields) + bytes(128) + tail

    try:
        records = read_bootfs(blob)
    except BootfsError:
        return
    check_records_within(blob, records)
    assert len(blob) >= (len(records) + 1) * BOOTFS_RECORD_SIZE


# ---------------------------------------------------------------------------
# The table of modification times that travels beside a bootfs
# ---------------------------------------------------------------------------


@given(st.lists(st.sampled_from([0, 7, 1_700_000_000_000_000_001]), max_size=50))
def test_time_runs_round_trip(times):
    runs = encode_time_runs(times)
    assert decode_time_runs(runs, len(times), "t") == times
    # Equal neighbours share one run.
    assert len(runs) == sum(
        1 for i, t in enumerate(times) if i == 0 or times[i - 1] != t
    )


@pytest.mark.parametrize(
    "runs",
    [
        {"a": 1},
        [[1]],
        [[1, 0]],
        [[-(1 << 63) - 1, 2]],
        [[1, 2.5]],
        [[1, True]],
        [[1, 4]],
        [[1, 1]],
    ],
)
def test_a_malformed_time_table_is_an_image_error(runs):
    with pytest.raises(ImageError, match="bootfs_mtimes"):
        decode_time_runs(runs, 3, "bootfs_mtimes")


def test_times_before_1970_are_kept():
    assert (
        decode_time_runs([[-86_400_000_000_000, 2]], 2, "t")
        == [-86_400_000_000_000] * 2
    )


def test_directories_made_only_as_parents_are_dated_as_the_root(hello):
    from osv.boot._unpack import unpack_bootfs
    from osv.vfs import RamFs, Vfs

    entries = [
        ManifestEntry("/", "dir", None, None, "test"),
        ManifestEntry("/a/b/file", "file", hello, None, "test"),
    ]
    blob = pack(entries)
    vfs = Vfs()
    vfs.mount(RamFs(), "none", "/")
    unpack_bootfs(vfs, memoryview(blob), read_bootfs(blob), [5, 9])

    assert vfs.stat("/").st_mtime_ns == 5
    assert vfs.stat("/a").st_mtime_ns == vfs.stat("/a/b").st_mtime_ns == 5
    assert vfs.stat("/a/b/file").st_mtime_ns == 9


def test_unpacked_objects_get_their_times_and_directories_keep_theirs(hello):
    from osv.boot._unpack import unpack_bootfs
    from osv.vfs import RamFs, Vfs

    entries = [
        ManifestEntry("/d", "dir", None, None, "test"),
        ManifestEntry("/d/hello", "file", hello, None, "test"),
        ManifestEntry("/d/link", "symlink", None, "hello", "test"),
        ManifestEntry("/d/e/deeper", "file", hello, None, "test"),
    ]
    blob = pack(entries)
    vfs = Vfs()
    vfs.mount(RamFs(), "none", "/")
    times = [10, 20, 30, 40]
    unpack_bootfs(vfs, memoryview(blob), read_bootfs(blob), times)

    assert vfs.stat("/d").st_mtime_ns == 10
    assert vfs.stat("/d/hello").st_mtime_ns == 20
    assert vfs.stat("/d/link", follow=False).st_mtime_ns == 30
    assert vfs.stat("/d/e/deeper").st_mtime_ns == 40
    assert vfs.stat("/d/e/deeper").st_atime_ns == 40
