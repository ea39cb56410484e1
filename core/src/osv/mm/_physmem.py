"""Guest-physical memory: the RAM view and the frame allocator."""

from __future__ import annotations

import bisect
import ctypes
import logging
import mmap

from osv.hv import _kvm

logger = logging.getLogger(__name__)

PAGE_SIZE = 4096
PAGE_SHIFT = 12
KERNEL_POOL_END = 2 << 20
_HOST_RW = mmap.PROT_READ | mmap.PROT_WRITE
_HOST_RWX = _HOST_RW | mmap.PROT_EXEC
# Frames in a 2 MiB page.
HUGE_FRAMES = 512


class OutOfMemoryError(Exception):
    """No run of free guest-physical frames is large enough."""


class PhysicalMemory:
    """Guest RAM as one host mapping, and an allocator of its 4 KiB frames.

    Frames are handed out as contiguous runs ("extents") so that an area of
    virtual memory maps to one run, and copying to or from it is one slice.
    """

    # Rationale: the host backs guest RAM lazily (MAP_NORESERVE), so a frame
    # costs host memory only once the guest or the kernel touches it. Freed
    # frames are discarded with MADV_DONTNEED, which (1) returns the memory to
    # the host, (2) makes the next reader see zeros, so every frame handed out
    # is already zero-filled, and (3) makes KVM's MMU notifier drop any shadow
    # mapping of the frame, so a stale guest translation can never reach a
    # frame after it was given to another address.

    def __init__(self, size: int, *, reserved: int) -> None:
        if size % PAGE_SIZE or size <= reserved:
            raise ValueError(f"guest memory size {size} is not usable")
        self.size = size
        self.host_address = _kvm.host_mmap(
            size,
            mmap.PROT_READ | mmap.PROT_WRITE,
            mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _kvm.MAP_NORESERVE,
        )
        # Transparent huge pages make the first guest touch of host memory
        # several times cheaper under KVM's shadow paging.
        _kvm.host_madvise(self.host_address, size, _kvm.MADV_HUGEPAGE)
        buffer = (ctypes.c_char * size).from_address(self.host_address)
        self.ram = memoryview(buffer).cast("B")
        self.ram_q = self.ram.cast("Q")
        # Frames for the kernel's own structures (page tables, per-vCPU
        # blocks) come from the rest of the first 2 MiB, which the kernel
        # touches at boot anyway. With transparent huge pages, the host's
        # first touch of a 2 MiB region costs milliseconds here; spreading
        # page tables over the whole of RAM would pay that for regions the
        # program may never use.
        pool_end = min(KERNEL_POOL_END, size)
        self._kernel_pool = list(range(pool_end - PAGE_SIZE, reserved - 1, -PAGE_SIZE))
        # Free extents as two parallel sorted lists of first frame and length.
        self._starts = [pool_end >> PAGE_SHIFT]
        self._lengths = [(size - pool_end) >> PAGE_SHIFT]
        self.total_frames = (size - reserved) >> PAGE_SHIFT
        self.free_frames = self.total_frames

    def allocate_kernel(self, npages: int = 1) -> int:
        """Contiguous zeroed frames for the kernel's own structures."""
        pool = self._kernel_pool
        if npages == 1 and pool:
            self.free_frames -= 1
            return pool.pop()
        if npages > 1 and len(pool) >= npages:
            # The pool is kept sorted from high to low addresses: take the
            # lowest npages if they are contiguous, else the general allocator.
            candidate = pool[-npages:]
            if candidate[0] - candidate[-1] == (npages - 1) * PAGE_SIZE:
                del pool[-npages:]
                self.free_frames -= npages
                return candidate[-1]
        return self.allocate(npages)

    def allocate(self, npages: int, phase: int = -1) -> int:
        """Return the guest-physical address of ``npages`` contiguous zeroed frames.

        With ``phase`` (a byte offset below 2 MiB) and at least 2 MiB asked
        for, the run starts at ``phase`` past a 2 MiB boundary when some free
        extent allows it, so that a virtual range with the same phase maps it
        with 2 MiB leaves. Otherwise the first extent that fits is used.
        """
        starts, lengths = self._starts, self._lengths
        if phase >= 0 and npages >= HUGE_FRAMES:
            want = (phase >> PAGE_SHIFT) & (HUGE_FRAMES - 1)
            for i, length in enumerate(lengths):
                first = starts[i]
                skip = (want - first) & (HUGE_FRAMES - 1)
                if length >= skip + npages:
                    self._take(i, first + skip, npages)
                    return (first + skip) << PAGE_SHIFT
        for i, length in enumerate(lengths):
            if length >= npages:
                first = starts[i]
                self._take(i, first, npages)
                return first << PAGE_SHIFT
        raise OutOfMemoryError(
            f"guest memory exhausted: no {npages} contiguous free pages "
            f"({self.free_frames} free of {self.total_frames}); run with a larger -m"
        )

    def _take(self, i: int, first: int, npages: int) -> None:
        """Cut frames [first, first + npages) out of free extent ``i``."""
        starts, lengths = self._starts, self._lengths
        start, length = starts[i], lengths[i]
        head = first - start
        tail = start + length - (first + npages)
        if head and tail:
            lengths[i] = head
            starts.insert(i + 1, first + npages)
            lengths.insert(i + 1, tail)
        elif head:
            lengths[i] = head
        elif tail:
            starts[i] = first + npages
            lengths[i] = tail
        else:
            del starts[i]
            del lengths[i]
        self.free_frames -= npages

    def free(self, address: int, npages: int) -> None:
        """Return frames to the allocator and discard their contents."""
        if npages <= 0:
            return
        _kvm.host_madvise(
            self.host_address + address, npages << PAGE_SHIFT, _kvm.MADV_DONTNEED
        )
        first = address >> PAGE_SHIFT
        starts, lengths = self._starts, self._lengths
        i = bisect.bisect_left(starts, first)
        # Merge with the following and the preceding extent where adjacent.
        if i < len(starts) and first + npages == starts[i]:
            npages_merged = npages + lengths[i]
            del starts[i]
            del lengths[i]
        else:
            npages_merged = npages
        if i > 0 and starts[i - 1] + lengths[i - 1] == first:
            lengths[i - 1] += npages_merged
        else:
            starts.insert(i, first)
            lengths.insert(i, npages_merged)
        self.free_frames += npages

    def discard(self, address: int, npages: int) -> None:
        """Make live frames read as zeros, giving their memory back to the host.

        The frames stay allocated to their owner; KVM's MMU notifier drops
        every cached translation of them, as for freed frames.
        """
        if npages > 0:
            _kvm.host_madvise(
                self.host_address + address,
                npages << PAGE_SHIFT,
                _kvm.MADV_DONTNEED,
            )

    def zap(self, address: int, npages: int) -> None:
        """Drop every cached translation of live frames, keeping their contents.

        Used after a mapping was made more restrictive: changing the host
        protection of the backing pages makes KVM's MMU notifier discard the
        shadow entries, so the guest re-walks its page tables on next access.
        """
        # Rationale: the change is execute permission added and taken away
        # again, not write permission: the frames may be written at this very
        # moment by another vCPU through another mapping (threads, a shared
        # file), and a store to host memory that is read-only for a moment
        # makes KVM_RUN fail with EFAULT instead of waiting.
        host = self.host_address + address
        size = npages << PAGE_SHIFT
        _kvm.host_mprotect(host, size, _HOST_RWX)
        _kvm.host_mprotect(host, size, _HOST_RW)

    def close(self) -> None:
        """Give guest RAM back to the host; the VM using it must be gone.

        Without this, every boot in one process (a reboot, a benchmark's
        loop) would keep its predecessor's memory: the resident pages, and
        huge pages the next VM then has to take fresh from the host.
        Views taken of ``ram`` before must not be used afterwards; ``ram``
        itself becomes empty, so that a stray access fails cleanly.
        """
        if self.host_address:
            self.ram = memoryview(b"")
            self.ram_q = memoryview(b"").cast("Q")
            _kvm.host_munmap(self.host_address, self.size)
            self.host_address = 0

    @property
    def used_bytes(self) -> int:
        return (self.total_frames - self.free_frames) << PAGE_SHIFT
