"""qcow2 disks: our reader against images qemu-img makes, our writer checked by qemu-img."""

import json
import os
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from osv.block import BlockError, Qcow2Disk, Qcow2Error, Qcow2Header, open_disk

MiB = 1024 * 1024

qemu_img = shutil.which("qemu-img")
qemu_io = shutil.which("qemu-io")
needs_qemu_img = pytest.mark.skipif(
    qemu_img is None, reason="qemu-img is not installed"
)
needs_qemu_io = pytest.mark.skipif(qemu_io is None, reason="qemu-io is not installed")


def run(*command):
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def qemu_check(path):
    """qemu-img check's verdict: (exit status, report as JSON)."""
    result = subprocess.run(
        [qemu_img, "check", "--output=json", str(path)], capture_output=True, text=True
    )
    return result.returncode, json.loads(result.stdout)


def qemu_to_raw(path, tmp_path):
    raw = tmp_path / "qemu-converted.raw"
    run(qemu_img, "convert", "-O", "raw", str(path), str(raw))
    return raw.read_bytes()


def pattern(size, seed=1):
    """Bytes that differ from cluster to cluster and are not compressible to zero."""
    block = bytes((seed * 131 + i * 7) % 251 + 1 for i in range(4093))
    return (block * (size // len(block) + 1))[:size]


# ---------------------------------------------------------------------------
# Images we write, judged by qemu-img
# ---------------------------------------------------------------------------


@needs_qemu_img
def test_a_new_image_is_a_clean_empty_qcow2_v3_of_the_asked_size(tmp_path):
    path = tmp_path / "new.qcow2"
    Qcow2Disk.create(path, 64 * MiB).close()

    info = json.loads(run(qemu_img, "info", "--output=json", str(path)))
    status, report = qemu_check(path)

    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 64 * MiB
    assert info["cluster-size"] == 65536
    assert info["format-specific"]["data"]["compat"] == "1.1"
    assert info["format-specific"]["data"]["refcount-bits"] == 16
    assert status == 0 and report["check-errors"] == 0 and report.get("leaks", 0) == 0
    # Header, refcount table, refcount block and L1 table: four clusters.
    assert os.path.getsize(path) == 4 * 65536
    with open_disk(path) as disk:
        assert disk.read(0, 64 * MiB) == bytes(64 * MiB)


@needs_qemu_img
@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    writes=st.lists(
        st.tuples(st.integers(0, 4 * MiB - 1), st.integers(1, 200_000)),
        min_size=1,
        max_size=8,
    ),
    cluster_bits=st.sampled_from([9, 12, 16]),
)
def test_any_writes_read_back_and_qemu_img_agrees(tmp_path, writes, cluster_bits):
    path = tmp_path / "w.qcow2"
    model = bytearray(4 * MiB)
    with Qcow2Disk.create(path, 4 * MiB, cluster_bits=cluster_bits) as disk:
        for number, (offset, length) in enumerate(writes):
            data = pattern(min(length, 4 * MiB - offset), seed=number)
            disk.write(offset, data)
            model[offset : offset + len(data)] = data
        assert disk.read(0, 4 * MiB) == model

    status, report = qemu_check(path)
    assert status == 0, report
    assert qemu_to_raw(path, tmp_path) == model


@needs_qemu_img
def test_an_image_larger_than_one_refcount_block_gets_more_blocks(tmp_path):
    # With 512-byte clusters a refcount block counts 256 clusters, so 600 KiB
    # of data needs several of them, each placed where it is needed.
    path = tmp_path / "small-clusters.qcow2"
    data = pattern(600 * 1024)
    with Qcow2Disk.create(path, 2 * MiB, cluster_bits=9) as disk:
        disk.write(4096, data)

    status, report = qemu_check(path)
    assert status == 0, report
    assert qemu_to_raw(path, tmp_path)[4096 : 4096 + len(data)] == data


def test_a_full_refcount_table_is_an_honest_error(tmp_path):
    # One cluster of refcount table with 512-byte clusters addresses 64 blocks
    # of 256 clusters: 8 MiB of file, no more.
    path = tmp_path / "full.qcow2"
    with Qcow2Disk.create(path, 16 * MiB, cluster_bits=9) as disk:
        with pytest.raises(Qcow2Error, match="refcount table is full"):
            disk.write(0, pattern(9 * MiB))


def test_a_terabyte_disk_takes_only_what_is_written(tmp_path):
    path = tmp_path / "big.qcow2"
    with Qcow2Disk.create(path, 1 << 40) as disk:
        disk.write((1 << 40) - 5, b"end!!")
        assert disk.read((1 << 40) - 10, 10) == bytes(5) + b"end!!"
        assert disk.read(123 << 30, 4096) == bytes(4096)

    assert os.path.getsize(path) < MiB


def test_create_refuses_sizes_qcow2_cannot_hold(tmp_path):
    with pytest.raises(Qcow2Error, match="multiple of 512"):
        Qcow2Disk.create(tmp_path / "a.qcow2", 1000)
    with pytest.raises(Qcow2Error, match="cluster_bits"):
        Qcow2Disk.create(tmp_path / "b.qcow2", MiB, cluster_bits=22)


# ---------------------------------------------------------------------------
# Images qemu-img makes, read (and changed) by us
# ---------------------------------------------------------------------------


@pytest.fixture
def source_raw(tmp_path):
    """A raw disk with data, a zero gap and more data, as qemu-img's input."""
    path = tmp_path / "source.raw"
    with open(path, "wb") as file:
        file.write(pattern(3 * MiB + 1234))
        file.seek(5 * MiB)
        file.write(pattern(MiB, seed=7))
        file.truncate(8 * MiB)
    return path


@needs_qemu_img
@pytest.mark.parametrize(
    "options",
    [
        ["-o", "compat=0.10"],
        ["-o", "compat=1.1"],
        ["-c"],
        ["-c", "-o", "compat=0.10"],
        ["-o", "cluster_size=512"],
        ["-o", "cluster_size=2M"],
        ["-o", "refcount_bits=64"],
        ["-o", "lazy_refcounts=on"],
    ],
    ids=lambda options: " ".join(options),
)
def test_images_qemu_img_writes_read_as_their_raw_source(tmp_path, source_raw, options):
    path = tmp_path / "q.qcow2"
    run(qemu_img, "convert", "-O", "qcow2", *options, str(source_raw), str(path))

    with open_disk(path) as disk:
        assert disk.format == "qcow2"
        assert disk.version == (2 if "compat=0.10" in options else 3)
        assert disk.read(0, disk.size) == source_raw.read_bytes()


@needs_qemu_img
@pytest.mark.parametrize("options", [["-c"], ["-o", "compat=0.10"], []], ids=str)
def test_writing_into_a_qemu_image_keeps_it_clean(tmp_path, source_raw, options):
    # Over compressed clusters this copies on write and frees the old ones.
    path = tmp_path / "q.qcow2"
    run(qemu_img, "convert", "-O", "qcow2", *options, str(source_raw), str(path))
    model = bytearray(source_raw.read_bytes())

    with open_disk(path, writable=True) as disk:
        for offset, data in ((1000, pattern(70_000, 3)), (4 * MiB, b"Q" * 10)):
            disk.write(offset, data)
            model[offset : offset + len(data)] = data

    status, report = qemu_check(path)
    assert status == 0, report
    assert qemu_to_raw(path, tmp_path) == model


@needs_qemu_img
@needs_qemu_io
def test_clusters_qemu_marks_as_zero_read_as_zeros_and_can_be_written(tmp_path):
    path = tmp_path / "z.qcow2"
    run(qemu_img, "create", "-q", "-f", "qcow2", str(path), "4M")
    run(qemu_io, "-c", "write -P 0x41 0 192k", "-c", "write -z 64k 64k", str(path))

    with open_disk(path, writable=True) as disk:
        assert disk.read(0, 192 * 1024) == b"A" * 65536 + bytes(65536) + b"A" * 65536
        disk.write(65536 + 100, b"B")
        assert disk.read(65536, 200) == bytes(100) + b"B" + bytes(99)

    assert qemu_check(path)[0] == 0


@needs_qemu_img
def test_writing_where_a_snapshot_shares_the_tables_is_refused_clearly(
    tmp_path, source_raw
):
    path = tmp_path / "s.qcow2"
    run(qemu_img, "convert", "-O", "qcow2", str(source_raw), str(path))
    run(qemu_img, "snapshot", "-c", "before", str(path))

    with open_disk(path, writable=True) as disk:
        assert disk.read(0, 4096) == source_raw.read_bytes()[:4096]
        with pytest.raises(Qcow2Error, match="shared with a snapshot"):
            disk.write(0, b"x")

    assert qemu_check(path)[0] == 0


# ---------------------------------------------------------------------------
# Headers we refuse, each with a reason
# ---------------------------------------------------------------------------


def _image_with(tmp_path, **fields):
    path = tmp_path / "h.qcow2"
    Qcow2Disk.create(path, MiB).close()
    data = bytearray(path.read_bytes())
    header = Qcow2Header.parse(bytes(data[:112]), "h")
    for name, value in fields.items():
        setattr(header, name, value)
    data[:104] = header.pack()
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"version": 1}, "version 1 is not supported"),
        ({"version": 4}, "version 4 is not supported"),
        ({"cluster_bits": 8}, "cluster_bits 8"),
        ({"cluster_bits": 30}, "cluster_bits 30"),
        ({"crypt_method": 1}, "encrypted"),
        ({"backing_file_offset": 4096, "backing_file_size": 4}, "backing file"),
        ({"incompatible_features": 1 << 7}, "unknown incompatible"),
        ({"incompatible_features": 2}, "marked corrupt"),
        ({"incompatible_features": 4}, "external data file"),
        ({"incompatible_features": 16}, "extended L2"),
        # Bit 3 announces a compression type other than zlib; QEMU refuses
        # it with zlib's 0 in the field, or with no field at all.
        ({"incompatible_features": 8, "header_length": 112}, "compression type"),
        ({"incompatible_features": 8, "header_length": 104}, "no compression_type"),
        ({"header_length": 112}, None),
        ({"header_length": 100}, "header_length"),
        ({"refcount_order": 7}, "refcount_order"),
        ({"size": MiB + 100}, "multiple of 512"),
        ({"size": 1 << 40}, "L1 table"),
        ({"l1_table_offset": 100}, "not aligned"),
        ({"l1_table_offset": 1 << 30}, "past the end"),
    ],
)
def test_headers_we_cannot_honour_are_refused_with_the_reason(
    tmp_path, fields, complaint
):
    path = _image_with(tmp_path, **fields)
    if complaint is None:
        # Compression type byte 0 (zlib) at offset 104, without bit 3, is fine.
        open_disk(path).close()
        return
    with pytest.raises(Qcow2Error, match=complaint):
        open_disk(path)


def test_zstd_compressed_images_are_refused(tmp_path):
    path = _image_with(tmp_path, incompatible_features=8, header_length=112)
    data = bytearray(path.read_bytes())
    data[104] = 1
    path.write_bytes(data)

    with pytest.raises(Qcow2Error, match="zstd"):
        open_disk(path)


def test_a_dirty_image_reads_but_is_not_changed(tmp_path, caplog):
    path = _image_with(tmp_path, incompatible_features=1)

    with open_disk(path) as disk:
        assert disk.read(0, 512) == bytes(512)
    assert "not closed cleanly" in caplog.text
    with pytest.raises(Qcow2Error, match="check -r all"):
        open_disk(path, writable=True)


def test_a_non_qcow2_file_given_as_qcow2_is_an_error(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"QFI\xfb")
    with pytest.raises(Qcow2Error, match="too short"):
        Qcow2Disk.open(path)
    path.write_bytes(b"RAW!" * 100)
    with pytest.raises(Qcow2Error, match="bad magic"):
        Qcow2Disk.open(path)


# ---------------------------------------------------------------------------
# Damaged images never crash, hang or read garbage silently
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("qcow2") / "t.qcow2"
    with Qcow2Disk.create(path, 2 * MiB, cluster_bits=12) as disk:
        disk.write(0, pattern(300 * 1024))
        disk.write(MiB, pattern(5000, seed=9))
    return path


@settings(
    max_examples=1000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# A refcount table offset beyond what a file offset can be (found this way).
@example(edits=[(48, 128)], cut=None)
@given(
    edits=st.lists(
        st.tuples(
            # The header, the refcount table, the L1 table and the L2 table.
            st.integers(0, 111) | st.integers(3 * 4096, 5 * 4096 + 64),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=6,
    ),
    cut=st.none() | st.integers(0, 400 * 1024),
)
def test_a_damaged_image_opens_and_reads_or_fails_only_with_a_block_error(
    tmp_path, template, edits, cut
):
    data = bytearray(template.read_bytes())
    for offset, value in edits:
        data[offset] = value
    if cut is not None:
        del data[cut:]
    path = tmp_path / "damaged.qcow2"
    path.write_bytes(data)

    for writable in (False, True):
        try:
            with Qcow2Disk.open(path, writable=writable) as disk:
                assert disk.size % 512 == 0
                length = min(disk.size, 512 * 1024)
                assert len(disk.read(0, length)) == length
                assert len(disk.read(disk.size - 512, 512)) == 512
                if writable:
                    disk.write(min(disk.size - 4, MiB), b"tail")
        except BlockError:
            pass
