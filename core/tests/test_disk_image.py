"""Disk images: sizes, the usr.img layout byte for byte, the descriptor, and robust opening."""

import json
import os
import shutil
import struct
import subprocess
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osv.image import (
    CMDLINE_MAX_BYTES,
    DESCRIPTOR_OFFSET,
    DiskImage,
    ImageDescriptor,
    ImageError,
    Partition,
    SizeError,
    parse_size,
    write_image,
    write_raw_image,
)

MiB = 1024 * 1024


def descriptor(**changes):
    fields = dict(
        kernel_version="0.1.0",
        fs_type="rofs",
        built_by="test",
        modules={"rofs": "1.0"},
        created="2024-01-02T03:04:05Z",
    )
    fields.update(changes)
    return ImageDescriptor(**fields)


@pytest.fixture
def image_path(tmp_path):
    return tmp_path / "usr.img"


def make_image(path, *, cmdline="/hello", partition=b"R" * MiB, **kwargs):
    size = write_raw_image(
        path, cmdline=cmdline, descriptor=descriptor(), partition=partition, **kwargs
    )
    assert size == os.path.getsize(path)
    return path.read_bytes()


# ---------------------------------------------------------------------------
# parse_size
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4096", 4096),
        ("0", 0),
        ("1024K", 1024 * 1024),
        ("1024k", 1024 * 1024),
        ("512M", 512 * MiB),
        ("512m", 512 * MiB),
        ("2G", 2 * 1024 * MiB),
        ("2g", 2 * 1024 * MiB),
        (" 8M ", 8 * MiB),
    ],
)
def test_parse_size_reads_binary_suffixes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["", "M", "-1M", "1.5G", "2T", "2GB", "2 G", "0x10", "lots"]
)
def test_parse_size_refuses_other_text(text):
    with pytest.raises(SizeError, match="invalid size"):
        parse_size(text)


def test_size_error_is_a_value_error_and_an_image_error():
    with pytest.raises(ValueError):
        parse_size("x")
    with pytest.raises(ImageError):
        parse_size("x")


# ---------------------------------------------------------------------------
# Layout, byte for byte
# ---------------------------------------------------------------------------


def test_mbr_has_the_signature_and_entry_index_1_as_osv_imgedit_writes_it(image_path):
    data = make_image(image_path)  # 1 MiB partition at 2 MiB

    assert data[510:512] == b"\x55\xaa"
    # Start: LBA 2 MiB / 512 = 4096.  4096 // 63 = 65 rem 1, so sector 2;
    # 65 // 255 = 0 rem 65, so cylinder 0, head 65 (0x41); word (0 << 6) | 2.
    # End: OSv uses the sector after the partition, LBA (2 MiB + 1 MiB) / 512
    # = 6144; 6144 // 63 = 97 rem 33, so sector 34 (0x22), head 97 (0x61).
    # Then start LBA 4096 (0x1000) and 2048 sectors (0x800), little-endian.
    assert data[0x1CE:0x1DE] == bytes.fromhex("00 41 0200 83 61 2200 00100000 00080000")
    # The other three entries and the boot code area stay empty.
    assert data[0x1BE:0x1CE] == bytes(16)
    assert data[0x1DE:0x1FE] == bytes(32)
    assert data[:0x1BE] == bytes(0x1BE)


def test_mbr_end_address_carries_cylinders_as_osv_packs_them(image_path):
    # End LBA 32135 = 2 * 255 * 63 + 5: 32135 // 63 = 510 rem 5 (sector 6),
    # 510 // 255 = 2 rem 0 (cylinder 2, head 0); word (2 << 6) | 6 = 0x86.
    sectors = 32135 - 4096
    data = make_image(image_path, partition=None, partition_size=sectors * 512)

    assert data[0x1CE:0x1DE] == bytes.fromhex(
        "00 41 0200 83 00 8600 00100000"
    ) + struct.pack("<I", sectors)


def test_mbr_chs_is_clamped_beyond_1023_cylinders(image_path):
    # 10 GiB ends at LBA 4096 + 20971520, cylinder 1305 > 1023: clamped to
    # 1023/254/63, i.e. head 0xFE and word (1023 << 6) | 63 = 0xFFFF.
    write_raw_image(
        image_path,
        cmdline="",
        descriptor=descriptor(),
        partition=None,
        partition_size=10 * 1024 * MiB,
    )
    with open(image_path, "rb") as image:
        entry = image.read(0x1DE)[0x1CE:]

    assert entry == bytes.fromhex("00 41 0200 83 fe ffff 00100000 00004001")


def test_cmdline_is_nul_terminated_at_offset_512(image_path):
    data = make_image(image_path, cmdline="--verbose /hello world")

    assert data[512 : 512 + 23] == b"--verbose /hello world\0"
    assert data[512 + 23 : DESCRIPTOR_OFFSET] == bytes(DESCRIPTOR_OFFSET - 512 - 23)


def test_descriptor_is_written_at_64_kib(image_path):
    data = make_image(image_path)

    # The JSON text written out by hand: sorted keys, no spaces.
    payload = (
        b'{"built_by":"test","created":"2024-01-02T03:04:05Z","fs_type":"rofs",'
        b'"kernel_version":"0.1.0","modules":{"rofs":"1.0"}}'
    )
    header = (
        b"OSVPYIMG"
        + (1).to_bytes(4, "little")
        + len(payload).to_bytes(4, "little")
        + zlib.crc32(payload).to_bytes(4, "little")
    )
    assert data[65536 : 65536 + 20 + len(payload)] == header + payload
    assert data[65536 + 20 + len(payload) : 2 * MiB] == bytes(
        2 * MiB - 65536 - 20 - len(payload)
    )


def test_partition_content_starts_at_2_mib(image_path):
    data = make_image(image_path, partition=b"ROOTFS" * 1000)

    assert data[2 * MiB : 2 * MiB + 6000] == b"ROOTFS" * 1000
    # 6000 bytes round up to 12 sectors; the image ends with the partition.
    assert len(data) == 2 * MiB + 12 * 512


def test_partition_can_come_from_a_file(image_path, tmp_path):
    source = tmp_path / "rofs.img"
    source.write_bytes(b"\x01\x02" * 5000)

    data = make_image(image_path, partition=source)

    assert data[2 * MiB : 2 * MiB + 10000] == b"\x01\x02" * 5000


def test_no_partition_gives_an_empty_root_and_a_2_mib_image(image_path):
    data = make_image(image_path, partition=None)

    assert len(data) == 2 * MiB
    assert data[0x1CE + 12 : 0x1CE + 16] == bytes(4)  # zero sectors


def test_min_size_grows_the_image_but_not_the_partition(image_path):
    data = make_image(image_path, partition=b"x" * 512, min_size="8M")

    assert len(data) == 8 * MiB
    with DiskImage.open(image_path) as image:
        assert image.partitions() == [Partition(1, 2 * MiB, 512)]


def test_min_size_smaller_than_the_content_is_ignored(image_path):
    data = make_image(image_path, partition=b"x" * 512, min_size=1000)

    assert len(data) == 2 * MiB + 512


def test_partition_size_smaller_than_its_content_is_refused(image_path):
    with pytest.raises(ImageError, match="smaller than its content"):
        make_image(image_path, partition=b"x" * 1024, partition_size=512)


def test_longest_cmdline_fits_and_one_byte_more_does_not(image_path):
    longest = "a" * CMDLINE_MAX_BYTES
    make_image(image_path, cmdline=longest, partition=None)
    with DiskImage.open(image_path) as image:
        assert image.cmdline == longest

    with pytest.raises(ImageError, match="at most 65023"):
        make_image(image_path, cmdline=longest + "a", partition=None)


def test_cmdline_with_nul_is_refused(image_path):
    with pytest.raises(ImageError, match="NUL"):
        make_image(image_path, cmdline="a\0b")


def test_failed_write_leaves_no_file_behind(tmp_path):
    target = tmp_path / "usr.img"

    with pytest.raises(ImageError):
        make_image(target, partition=tmp_path / "missing-rofs.img")

    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------
# Opening and editing
# ---------------------------------------------------------------------------


def test_open_reads_back_what_was_written(image_path):
    make_image(image_path, cmdline="--rootfs=rofs /hello")

    with DiskImage.open(image_path) as image:
        assert image.cmdline == "--rootfs=rofs /hello"
        assert image.descriptor == descriptor()
        assert image.partitions() == [Partition(1, 2 * MiB, MiB)]
        assert image.size == 3 * MiB
        assert image.read(2 * MiB, 3) == b"RRR"


def test_set_cmdline_writes_one_nul_and_leaves_the_rest_as_osv_setargs(image_path):
    make_image(image_path, cmdline="--verbose /hello")

    with DiskImage.open(image_path, writable=True) as image:
        image.set_cmdline("ab")
        assert image.cmdline == "ab"
        assert image.read(512, 17) == b"ab\0erbose /hello\0"

    with DiskImage.open(image_path) as image:
        assert image.cmdline == "ab"


def test_set_cmdline_needs_a_writable_image(image_path):
    make_image(image_path)

    with (
        DiskImage.open(image_path) as image,
        pytest.raises(ImageError, match="read-only"),
    ):
        image.set_cmdline("x")


def test_set_cmdline_checks_the_length(image_path):
    make_image(image_path)

    with DiskImage.open(image_path, writable=True) as image:
        with pytest.raises(ImageError, match="at most"):
            image.set_cmdline("a" * (CMDLINE_MAX_BYTES + 1))
        assert image.cmdline == "/hello"


@pytest.mark.parametrize(
    ("offset", "size"),
    [(-1, 1), (0, -1), (3 * MiB, 1), (3 * MiB - 1, 2), (0, 3 * MiB + 1)],
)
def test_read_outside_the_image_is_refused(image_path, offset, size):
    make_image(image_path)

    with (
        DiskImage.open(image_path) as image,
        pytest.raises(ImageError, match="outside"),
    ):
        image.read(offset, size)


def test_read_up_to_the_last_byte_is_allowed(image_path):
    make_image(image_path)

    with DiskImage.open(image_path) as image:
        assert image.read(3 * MiB - 1, 1) == b"R"
        assert image.read(3 * MiB, 0) == b""


def test_a_qcow2_header_of_an_unknown_version_is_an_image_error(tmp_path):
    path = tmp_path / "disk.qcow2"
    path.write_bytes(b"QFI\xfb" + bytes(4096))

    with pytest.raises(ImageError, match="qcow2 version 0 is not supported"):
        DiskImage.open(path)


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (b"", "neither a qcow2 image nor a raw OSv image .* only 0 bytes"),
        (b"garbage" * 100, "neither a qcow2 image nor a raw OSv image"),
        (bytes(2 * MiB), "no image descriptor at byte 65536"),
    ],
    ids=["empty", "garbage", "zeros"],
)
def test_unusable_file_is_an_image_error(tmp_path, content, complaint):
    path = tmp_path / "bad.img"
    path.write_bytes(content)

    with pytest.raises(ImageError, match=complaint):
        DiskImage.open(path)


def test_truncated_image_is_an_image_error(image_path):
    data = make_image(image_path)
    image_path.write_bytes(data[: 2 * MiB + 100])

    with pytest.raises(ImageError, match="runs past the end of the image"):
        DiskImage.open(image_path)


def test_image_without_descriptor_is_an_image_error(image_path):
    data = bytearray(make_image(image_path))
    data[DESCRIPTOR_OFFSET : DESCRIPTOR_OFFSET + 8] = b"\x7fELF\x02\x01\x01\x00"
    image_path.write_bytes(data)

    with pytest.raises(ImageError, match="no image descriptor at byte 65536"):
        DiskImage.open(image_path)


def test_unterminated_cmdline_is_an_image_error(image_path):
    data = bytearray(make_image(image_path))
    data[512:DESCRIPTOR_OFFSET] = b"x" * (DESCRIPTOR_OFFSET - 512)
    image_path.write_bytes(data)

    with pytest.raises(ImageError, match="not NUL-terminated"):
        DiskImage.open(image_path)


def test_missing_file_and_directory_are_image_errors(tmp_path):
    with pytest.raises(ImageError, match="cannot open image"):
        DiskImage.open(tmp_path / "absent.img")
    with pytest.raises(ImageError, match="cannot open image"):
        DiskImage.open(tmp_path)


# ---------------------------------------------------------------------------
# The descriptor
# ---------------------------------------------------------------------------


def test_descriptor_round_trips():
    original = descriptor(modules={"rofs": "1.0", "nfs": "0.3.1"})

    assert ImageDescriptor.from_bytes(original.to_bytes()) == original


def test_descriptor_reader_ignores_bytes_after_it():
    original = descriptor()

    assert ImageDescriptor.from_bytes(original.to_bytes() + b"\xff" * 100) == original


def test_descriptor_keeps_unknown_keys_from_newer_writers():
    newer = descriptor(extra={"signature": "abc", "flags": [1, 2]})

    read = ImageDescriptor.from_bytes(newer.to_bytes())

    assert read.extra == {"signature": "abc", "flags": [1, 2]}
    assert read.to_bytes() == newer.to_bytes()


def test_descriptor_created_defaults_to_source_date_epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")

    made = ImageDescriptor(kernel_version="1", fs_type="rofs", built_by="t")

    assert made.created == "1970-01-02T00:00:00Z"


def raw_descriptor(
    payload: bytes, *, magic=b"OSVPYIMG", version=1, length=None, crc=None
):
    return (
        struct.pack(
            "<8sIII",
            magic,
            version,
            len(payload) if length is None else length,
            zlib.crc32(payload) if crc is None else crc,
        )
        + payload
    )


GOOD_JSON = json.dumps(
    {
        "kernel_version": "0.1.0",
        "fs_type": "rofs",
        "built_by": "test",
        "modules": {},
        "created": "2024-01-02T03:04:05Z",
    }
).encode()


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"OSVPYIM", "truncated header"),
        (raw_descriptor(GOOD_JSON, magic=b"OSVPYIMX"), "bad magic"),
        (raw_descriptor(GOOD_JSON, version=2), "format version 2 is not supported"),
        (raw_descriptor(GOOD_JSON, length=len(GOOD_JSON) + 1), "runs past its area"),
        (raw_descriptor(GOOD_JSON, length=0xFFFFFFFF), "runs past its area"),
        (raw_descriptor(GOOD_JSON, crc=0), "checksum mismatch"),
        (raw_descriptor(b"{not json"), "invalid JSON"),
        (raw_descriptor(b"\xff\xfe"), "invalid JSON"),
        (raw_descriptor(b"[" * 100000), "invalid JSON"),
        (raw_descriptor(b"[]"), "not an object"),
        (raw_descriptor(b'{"a":1,"a":2}'), "invalid JSON"),
        (raw_descriptor(b'{"kernel_version":"1"}'), "missing keys"),
        (
            raw_descriptor(GOOD_JSON.replace(b'"modules": {}', b'"modules": {"a": 1}')),
            "modules must map",
        ),
        (
            raw_descriptor(GOOD_JSON.replace(b'"fs_type": "rofs"', b'"fs_type": ""')),
            "fs_type must be a non-empty string",
        ),
    ],
)
def test_bad_descriptor_is_an_image_error(data, complaint):
    with pytest.raises(ImageError, match=complaint):
        ImageDescriptor.from_bytes(data)


def test_descriptor_too_large_for_its_area_is_refused():
    huge = descriptor(extra={"padding": "x" * (2 * MiB)})

    with pytest.raises(ImageError, match="do not fit"):
        huge.to_bytes()


def test_descriptor_extra_may_not_repeat_known_keys():
    with pytest.raises(ImageError, match="repeats known keys"):
        descriptor(extra={"fs_type": "zfs"})


@settings(max_examples=300)
@given(
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(0, 200),
)
def test_mutated_descriptor_reads_or_fails_only_with_image_error(edits, cut):
    data = bytearray(descriptor().to_bytes())
    for position, value in edits:
        if position < len(data):
            data[position] = value
    if cut is not None:
        del data[cut:]

    try:
        ImageDescriptor.from_bytes(bytes(data))
    except ImageError:
        pass


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_any_json_payload_with_a_valid_header_reads_or_fails_only_with_image_error(
    payload,
):
    try:
        read = ImageDescriptor.from_bytes(raw_descriptor(payload))
    except ImageError:
        return
    assert isinstance(read.modules, dict)


json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=5),
    st.lists(st.text(max_size=3), max_size=3),
    st.dictionaries(
        st.text(max_size=3), st.text(max_size=3) | st.integers(), max_size=3
    ),
)


@settings(max_examples=200)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            key: json_values
            for key in (
                "kernel_version",
                "fs_type",
                "built_by",
                "modules",
                "created",
                "x",
            )
        },
    )
)
def test_any_json_object_reads_or_fails_only_with_image_error(document):
    try:
        ImageDescriptor.from_bytes(raw_descriptor(json.dumps(document).encode()))
    except ImageError:
        pass


@pytest.fixture(scope="module")
def template_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "usr.img"
    write_raw_image(
        path, cmdline="/hello", descriptor=descriptor(), partition=b"P" * 4096
    )
    return path


# Mutations land where the image's structure is: the MBR, the command line
# and the descriptor header and JSON.
structural_offsets = (
    st.integers(0, 511)
    | st.integers(512, 600)
    | st.integers(DESCRIPTOR_OFFSET, DESCRIPTOR_OFFSET + 200)
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    edits=st.lists(st.tuples(structural_offsets, st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(0, 2 * 1024 * 1024 + 4096),
)
def test_mutated_image_opens_or_fails_only_with_image_error(
    template_image, tmp_path, edits, cut
):
    path = tmp_path / "mutated.img"
    shutil.copyfile(template_image, path)
    with open(path, "r+b") as image:
        for position, value in edits:
            image.seek(position)
            image.write(bytes([value]))
        if cut is not None:
            image.truncate(cut)

    try:
        with DiskImage.open(path) as opened:
            cmdline, partitions = opened.cmdline, opened.partitions()
    except ImageError:
        return
    assert isinstance(cmdline, str)
    for partition in partitions:
        assert partition.start + partition.size <= os.path.getsize(path)


# ---------------------------------------------------------------------------
# qemu-img as the oracle
# ---------------------------------------------------------------------------

qemu_img = shutil.which("qemu-img")
needs_qemu_img = pytest.mark.skipif(
    qemu_img is None, reason="qemu-img is not installed"
)


@needs_qemu_img
def test_qemu_img_reads_our_image_as_raw_with_its_size(image_path):
    make_image(image_path, partition=b"x" * 5000, min_size="4M")

    info = json.loads(
        subprocess.run(
            [qemu_img, "info", "--output=json", str(image_path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )

    assert info["format"] == "raw"
    assert info["virtual-size"] == 4 * MiB


@needs_qemu_img
def test_an_empty_qcow2_made_by_qemu_img_opens_as_qcow2_but_is_no_image(tmp_path):
    path = tmp_path / "disk.qcow2"
    subprocess.run(
        [qemu_img, "create", "-q", "-f", "qcow2", str(path), "64M"],
        check=True,
        capture_output=True,
    )

    with pytest.raises(ImageError, match="no MBR signature"):
        DiskImage.open(path)


@needs_qemu_img
def test_image_converted_by_qemu_img_to_raw_keeps_its_layout(image_path, tmp_path):
    make_image(image_path, cmdline="--nomount /hello", partition=b"z" * 1024)
    qcow2, back = tmp_path / "usr.qcow2", tmp_path / "back.img"
    for source, target, fmt in ((image_path, qcow2, "qcow2"), (qcow2, back, "raw")):
        subprocess.run(
            [qemu_img, "convert", "-O", fmt, str(source), str(target)],
            check=True,
            capture_output=True,
        )

    with DiskImage.open(back) as image:
        assert image.cmdline == "--nomount /hello"
        assert image.descriptor == descriptor()
        assert image.partitions() == [Partition(1, 2 * MiB, 1024)]


def test_image_package_exports_exactly_its_public_api():
    import osv.image

    # dir(), not vars(): manifest and conversion names are imported on first
    # use (PEP 562), and the package's __dir__ lists them before that.
    assert sorted(osv.image.__all__) == sorted(
        name for name in dir(osv.image) if not name.startswith("_")
    )
    for name in osv.image.__all__:
        assert getattr(osv.image, name) is not None


@pytest.mark.parametrize(
    ("offset", "size"), [(2 * MiB, MiB), (2 * MiB + 5, 1000), (0, 3 * MiB), (7, 0)]
)
def test_a_view_shows_the_bytes_a_read_gives(image_path, offset, size):
    make_image(image_path, partition=bytes(range(256)) * (MiB // 256))

    with DiskImage.open(image_path) as image:
        view = image.view(offset, size)
        assert view.readonly
        assert bytes(view) == image.read(offset, size)
        del view


def test_a_view_outside_the_image_is_refused(image_path):
    make_image(image_path)

    with (
        DiskImage.open(image_path) as image,
        pytest.raises(ImageError, match="outside"),
    ):
        image.view(3 * MiB - 1, 2)


def test_a_qcow2_image_gives_a_view_of_the_same_bytes(image_path, tmp_path):
    partition = bytes(range(256)) * (MiB // 256)
    make_image(image_path, partition=partition)
    qcow2 = tmp_path / "usr.qcow2"
    write_image(
        qcow2, cmdline="/hello", descriptor=descriptor(), partition=partition,
        format="qcow2",
    )  # fmt: skip

    with DiskImage.open(qcow2) as image:
        assert bytes(image.view(2 * MiB, MiB)) == partition
