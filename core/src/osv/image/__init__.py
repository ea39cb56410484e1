"""Image assembly and inspection: manifests, bootfs blobs, disk images (raw and
qcow2) and their descriptor."""

from osv._lazy import lazy_exports as _lazy_exports

from ._bootfs import (
    BOOTFS_NAME_MAX,
    BOOTFS_RECORD_SIZE,
    BOOTFS_TYPE_FILE,
    BOOTFS_TYPE_SYMLINK,
    BootfsRecord,
    read_bootfs,
    write_bootfs,
)
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

# Manifests and conversion serve only building and converting images; booting
# imports this package too, so those names are imported on first use (PEP 562).
_EXPORTED_FROM = {
    "CONVERT_FORMATS": "osv.image._convert",
    "convert_image": "osv.image._convert",
    "ManifestEntry": "osv.image._manifest",
    "ManifestText": "osv.image._manifest",
    "check_tree": "osv.image._manifest",
    "manifest_from_paths": "osv.image._manifest",
    "read_manifest": "osv.image._manifest",
}


__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTED_FROM, __all__)
