"""Image assembly and inspection: manifests, bootfs blobs, disk images (raw and
qcow2) and their descriptor."""

from ._bootfs import (
    BOOTFS_NAME_MAX,
    BOOTFS_RECORD_SIZE,
    BOOTFS_TYPE_FILE,
    BOOTFS_TYPE_SYMLINK,
    BootfsRecord,
    read_bootfs,
    write_bootfs,
)
from ._convert import CONVERT_FORMATS, convert_image
from ._descriptor import (
    DESCRIPTOR_MAGIC,
    DESCRIPTOR_OFFSET,
    DESCRIPTOR_VERSION,
    ImageDescriptor,
)
from ._disk import (
    CMDLINE_MAX_BYTES,
    CMDLINE_OFFSET,
    IMAGE_FORMATS,
    ROOT_PARTITION_INDEX,
    ROOT_PARTITION_OFFSET,
    DiskImage,
    Partition,
    check_output_path,
    write_image,
    write_raw_image,
)
from ._errors import BootfsError, ImageError, ManifestError, SizeError
from ._manifest import (
    ManifestEntry,
    ManifestText,
    check_tree,
    manifest_from_paths,
    read_manifest,
)
from ._size import parse_size
from ._times import build_time_ns, decode_time_runs, encode_time_runs, host_time_ns

__all__ = [
    "BOOTFS_NAME_MAX",
    "BOOTFS_RECORD_SIZE",
    "BOOTFS_TYPE_FILE",
    "BOOTFS_TYPE_SYMLINK",
    "CMDLINE_MAX_BYTES",
    "CMDLINE_OFFSET",
    "CONVERT_FORMATS",
    "DESCRIPTOR_MAGIC",
    "DESCRIPTOR_OFFSET",
    "DESCRIPTOR_VERSION",
    "IMAGE_FORMATS",
    "ROOT_PARTITION_INDEX",
    "ROOT_PARTITION_OFFSET",
    "BootfsError",
    "BootfsRecord",
    "DiskImage",
    "ImageDescriptor",
    "ImageError",
    "ManifestEntry",
    "ManifestError",
    "ManifestText",
    "check_output_path",
    "check_tree",
    "Partition",
    "SizeError",
    "build_time_ns",
    "convert_image",
    "decode_time_runs",
    "encode_time_runs",
    "host_time_ns",
    "manifest_from_paths",
    "parse_size",
    "read_bootfs",
    "read_manifest",
    "write_bootfs",
    "write_image",
    "write_raw_image",
]
