"""KVM's own counters for a VM or a vCPU, read through its binary statistics fd.

They count what the kernel never sees: exits that KVM serves itself, such as
the shadow page faults of the first touch of a page (``pf_fixed``), beside
the exits that reach us (``mmio_exits``, ``io_exits``).
"""

from __future__ import annotations

import logging
import os
import struct

from osv.hv._kvm import KvmError, ioctl

logger = logging.getLogger(__name__)

# _IO(KVMIO, 0xce), include/uapi/linux/kvm.h; answered where
# KVM_CAP_BINARY_STATS_FD (203) is offered.
KVM_GET_STATS_FD = 0xAECE
KVM_CAP_BINARY_STATS_FD = 203

# struct kvm_stats_header: flags, name_size, num_desc, id_offset,
# desc_offset, data_offset (all u32).
_HEADER = struct.Struct("<6I")
# struct kvm_stats_desc without its trailing name[name_size]: flags (u32),
# exponent (s16), size (u16, in u64 values), offset (u32, from data_offset),
# bucket_size (u32).
_DESC = struct.Struct("<IhHII")
# Bits 0-3 of a descriptor's flags give its type; 0 is a cumulative counter.
KVM_STATS_TYPE_MASK = 0xF
KVM_STATS_TYPE_CUMULATIVE = 0


class KvmStats:
    """The cumulative counters of one KVM object (a VM or a vCPU file descriptor).

    Histograms and instant values are left out: only counters that add up
    over a run are kept, by their kernel names (``exits``, ``pf_fixed``, ...).
    """

    def __init__(self, fd: int) -> None:
        self.fd = ioctl(fd, KVM_GET_STATS_FD, 0)
        header = os.pread(self.fd, _HEADER.size, 0)
        _, name_size, count, _, desc_offset, data_offset = _HEADER.unpack(header)
        step = _DESC.size + name_size
        table = os.pread(self.fd, count * step, desc_offset)
        self._data_offset = data_offset
        self._fields: list[tuple[str, int]] = []
        end = 0
        for i in range(count):
            flags, _, size, offset, _ = _DESC.unpack_from(table, i * step)
            end = max(end, offset + 8 * size)
            if flags & KVM_STATS_TYPE_MASK != KVM_STATS_TYPE_CUMULATIVE or size != 1:
                continue
            raw = table[i * step + _DESC.size : (i + 1) * step]
            self._fields.append((raw.split(b"\0", 1)[0].decode("ascii"), offset))
        self._data_size = end

    def read(self) -> dict[str, int]:
        """Every cumulative counter's current value."""
        data = os.pread(self.fd, self._data_size, self._data_offset)
        return {
            name: int.from_bytes(data[offset : offset + 8], "little")
            for name, offset in self._fields
        }

    def close(self) -> None:
        os.close(self.fd)


def open_stats(fd: int) -> KvmStats | None:
    """KvmStats of ``fd``, or None (logged) where KVM does not offer them."""
    try:
        return KvmStats(fd)
    except (KvmError, OSError, struct.error, UnicodeDecodeError) as error:
        logger.debug("KVM statistics unavailable: %s", error)
        return None
