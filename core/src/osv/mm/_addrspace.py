"""The application's virtual address space: areas, mmap family, brk, copy in/out."""

from __future__ import annotations

import bisect
import errno
import logging
from collections.abc import Callable
from typing import Protocol

from osv.mm._pagetable import HUGE_MASK, HUGE_SIZE, PTE_NX, PTE_RW, PTE_US, PageTable
from osv.mm._physmem import PAGE_SHIFT, PAGE_SIZE, OutOfMemoryError, PhysicalMemory

logger = logging.getLogger(__name__)

PROT_NONE = 0
PROT_READ = 1
PROT_WRITE = 2
PROT_EXEC = 4

MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_GROWSDOWN = 0x0100
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_STACK = 0x20000
MAP_FIXED_NOREPLACE = 0x100000

# Linux x86-64 user-space layout without address-space randomisation.
USER_END = 0x7FFFFFFFF000
STACK_TOP = USER_END
MMAP_TOP = 0x7FFFF7FFF000
PIE_BASE = 0x555555554000
MMAP_MIN = 0x10000

# Areas larger than this, and PROT_NONE areas, get frames on first touch
# instead of at creation: they are reservations (a Go heap arena, a JVM heap,
# malloc's per-thread arenas) far larger than what the program will touch.
LAZY_THRESHOLD = 256 << 20
# A lazy range made accessible by mprotect is populated at once when it is at
# most this large, because a guest page fault is far costlier than mapping.
POPULATE_ON_PROTECT = 64 << 20
# A demand fault maps this much around the faulting page (see populate).
FAULT_AROUND = 256 << 10


class MemoryFault(Exception):
    """An access by the kernel to guest memory that the program may not make."""

    errno = errno.EFAULT


class MappingDenied(Exception):
    """A protection the mapping's source does not allow (a read-only shared file)."""

    errno = errno.EACCES


class FrameLender(Protocol):
    """An owner of frames that programs map and that must know who maps them.

    A file kept in guest frames (ramfs) lends them to file mappings: shared
    writable ones write the file itself. The owner keeps the frames while
    any address space maps them, and changes those mappings when the file's
    size changes (see AddressSpace.refit_lender).
    """

    def lender_runs(self, offset: int, length: int) -> list[tuple[int, int]]:
        """Runs of (frame address, page count) holding bytes [offset, offset + length).

        ``offset`` and ``length`` are page-aligned and within the lender's
        size rounded up to a page.
        """

    def lent(self, space: AddressSpace) -> None:
        """``space`` now has an area mapping the lender's frames."""

    def returned(self, space: AddressSpace) -> None:
        """An area of ``space`` mapping the lender's frames went away.

        Other areas of ``space`` may still map them (see maps_lender).
        """


def page_align_up(value: int) -> int:
    return (value + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def leaf_flags(prot: int) -> int:
    """Page-table leaf bits for PROT_* bits (present-ness is added by PageTable)."""
    flags = PTE_US
    if prot & PROT_WRITE:
        flags |= PTE_RW
    if not prot & PROT_EXEC:
        flags |= PTE_NX
    return flags


# A plain class, not a dataclass: making a dataclass compiles generated code
# at import, on every boot. Areas compare by identity.
class VmArea:
    """A run of pages with one protection; ``pa`` is -1 for frames-on-demand.

    A ``borrowed`` area maps frames it does not own: a file's pages in a
    file system's cache, shared with every other mapping of them. Unmapping
    it leaves the frames to their owner. A borrowed area is writable by the
    program only when it is shared and ``may_write`` (the owner is the file
    itself, and the descriptor was open for writing: Linux's VM_MAYWRITE);
    a private one is copied before it is written.

    ``lender`` is the FrameLender whose frames the area maps (or, with
    ``beyond_eof``, would map once the file grows); it is told when the
    area goes away.
    """

    def __init__(
        self,
        start: int,
        end: int,
        prot: int,
        flags: int,
        pa: int = -1,
        pages: dict[int, int] | None = None,
        name: str = "",
        offset: int = 0,
        device: int = 0,
        inode: int = 0,
        hidden: bool = False,
        borrowed: bool = False,
        vnode: object = None,
        beyond_eof: bool = False,
        may_write: bool = False,
        lender: object = None,
    ) -> None:
        self.start = start
        self.end = end
        self.prot = prot
        self.flags = flags
        self.pa = pa
        self.pages: dict[int, int] = {} if pages is None else pages
        self.name = name
        self.offset = offset
        self.device = device
        self.inode = inode
        self.hidden = hidden
        self.borrowed = borrowed
        #: The mapped file's vnode (None for anonymous memory).
        self.vnode = vnode
        #: Whole pages past the end of the mapped file: no frames, SIGBUS.
        self.beyond_eof = beyond_eof
        #: A shared file mapping that may be made writable (see the class).
        self.may_write = may_write
        #: The FrameLender of a mapping of a file kept in frames, else None.
        self.lender = lender
        #: For a private file mapping whose own frames hold the file's bytes
        #: as copied and have never been writable: the file's content token
        #: then (Vnode.content_token). None otherwise.
        self.token: object = None

    def __repr__(self) -> str:
        return (
            f"VmArea({self.start:#x}-{self.end:#x}, prot={self.prot}, "
            f"flags={self.flags:#x}, name={self.name!r})"
        )

    @property
    def lazy(self) -> bool:
        return self.pa < 0

    @property
    def npages(self) -> int:
        return (self.end - self.start) >> PAGE_SHIFT

    def split_at(self, address: int) -> VmArea:
        """Cut this area at ``address``; return the upper part (this keeps the lower)."""
        upper = VmArea(
            address,
            self.end,
            self.prot,
            self.flags,
            -1 if self.pa < 0 else self.pa + (address - self.start),
            name=self.name,
            offset=self.offset + (address - self.start),
            device=self.device,
            inode=self.inode,
            hidden=self.hidden,
            borrowed=self.borrowed,
            vnode=self.vnode,
            beyond_eof=self.beyond_eof,
            may_write=self.may_write,
            lender=self.lender,
        )
        upper.token = self.token
        if self.pa < 0:
            cut = address >> PAGE_SHIFT
            upper.pages = {vpn: pa for vpn, pa in self.pages.items() if vpn >= cut}
            self.pages = {vpn: pa for vpn, pa in self.pages.items() if vpn < cut}
        self.end = address
        return upper

    def maps_line(self) -> str:
        perms = (
            ("r" if self.prot & PROT_READ else "-")
            + ("w" if self.prot & PROT_WRITE else "-")
            + ("x" if self.prot & PROT_EXEC else "-")
            + ("s" if self.flags & MAP_SHARED else "p")
        )
        dev = f"{self.device >> 8:02x}:{self.device & 0xFF:02x}"
        line = f"{self.start:08x}-{self.end:08x} {perms} {self.offset:08x} {dev} {self.inode}"
        if self.name:
            line = f"{line:<72} {self.name}"
        return line


class AddressSpace:
    """Areas of the program's memory and the page tables that map them."""

    # Rationale: every area is mapped in the page tables when it is created
    # (eagerly), because the host backs guest RAM lazily, so an untouched mapped
    # frame costs no host memory, while a guest page fault costs a trip through
    # the emulated ring-0 exception stub (about 80 µs on PVM). Only
    # reservations (PROT_NONE, or larger than LAZY_THRESHOLD) take frames on
    # first touch. An eager area owns one contiguous run of frames, so the
    # kernel copies to and from it with a single slice of the RAM view.
    #
    # A mapping made more restrictive must not stay reachable through a stale
    # translation: see PhysicalMemory.zap and PhysicalMemory.free.

    def __init__(self, phys: PhysicalMemory) -> None:
        self.phys = phys
        self.ram = phys.ram
        self.pt = PageTable(phys)
        self.areas: list[VmArea] = []
        self._starts: list[int] = []
        self.brk_start = 0
        self.brk = 0
        self._last: VmArea | None = None

    # ---- area bookkeeping -------------------------------------------------

    def _insert(self, area: VmArea) -> None:
        i = bisect.bisect_left(self._starts, area.start)
        self.areas.insert(i, area)
        self._starts.insert(i, area.start)

    def _reindex(self) -> None:
        self.areas.sort(key=lambda a: a.start)
        self._starts = [a.start for a in self.areas]
        self._last = None

    def find(self, address: int) -> VmArea | None:
        """The area containing ``address``, or None."""
        last = self._last
        if last is not None and last.start <= address < last.end:
            return last
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0:
            area = self.areas[i]
            if address < area.end:
                self._last = area
                return area
        return None

    def _overlapping(self, start: int, end: int) -> list[VmArea]:
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        found = []
        for area in self.areas[i:]:
            if area.start >= end:
                break
            if area.end > start:
                found.append(area)
        return found

    def _isolate(self, start: int, end: int) -> list[VmArea]:
        """Split areas so that [start, end) is covered by whole areas; return them."""
        changed = False
        for area in self._overlapping(start, end):
            if area.start < start:
                # The part from ``start`` on may itself reach past ``end``.
                area = area.split_at(start)
                self.areas.append(area)
                changed = True
            if area.end > end and area.start < end:
                self.areas.append(area.split_at(end))
                changed = True
        if changed:
            self._reindex()
        return [a for a in self._overlapping(start, end) if a.start >= start]

    def free_range(self, length: int, top: int = MMAP_TOP, phase: int = -1) -> int:
        """The highest free gap of ``length`` bytes below ``top``, top-down as Linux.

        With ``phase``, a range of 2 MiB or more starts ``phase`` bytes past a
        2 MiB boundary (0 for anonymous memory, the file offset's phase for a
        file), as Linux places mappings that transparent huge pages can back:
        its frames can then be mapped with 2 MiB leaves (see PageTable).
        """
        align = phase >= 0 and length >= HUGE_SIZE
        phase &= HUGE_MASK

        def highest(end: int) -> int:
            if not align:
                return end - length
            return ((end - length - phase) & ~HUGE_MASK) + phase

        end = top
        i = bisect.bisect_left(self._starts, top)
        for area in reversed(self.areas[:i]):
            candidate = highest(end)
            if area.end <= candidate:
                return candidate
            end = min(end, area.start)
        if highest(end) >= MMAP_MIN:
            return highest(end)
        raise MemoryFault("no free virtual range")

    # ---- creating and removing -------------------------------------------

    def map_area(
        self,
        start: int,
        length: int,
        prot: int,
        flags: int = MAP_PRIVATE | MAP_ANONYMOUS,
        *,
        name: str = "",
        offset: int = 0,
        device: int = 0,
        inode: int = 0,
        lazy: bool | None = None,
        hidden: bool = False,
        vnode: object = None,
        beyond_eof: bool = False,
        may_write: bool = False,
        lender: FrameLender | None = None,
    ) -> VmArea:
        """Create an area at a fixed, page-aligned, free range and map it.

        With ``beyond_eof``, the area stands for whole pages past the end of
        a file: it gets no frames and a touch raises SIGBUS. ``lender`` and
        ``may_write`` are recorded for such pages of a mapping of a file kept
        in frames, which get the file's frames should it grow.
        """
        length = page_align_up(length)
        if lazy is None:
            lazy = prot == PROT_NONE or length > LAZY_THRESHOLD
        area = VmArea(
            start,
            start + length,
            prot,
            flags,
            name=name,
            offset=offset,
            device=device,
            inode=inode,
            hidden=hidden,
            vnode=vnode,
            beyond_eof=beyond_eof,
            may_write=may_write,
            lender=lender,
        )
        if not lazy and not beyond_eof:
            area.pa = self.phys.allocate(length >> PAGE_SHIFT, start & HUGE_MASK)
            if prot != PROT_NONE:
                self.pt.map(start, area.pa, length >> PAGE_SHIFT, leaf_flags(prot))
        self._insert(area)
        if lender is not None:
            lender.lent(self)
        return area

    def map_borrowed(
        self,
        start: int,
        runs: list[tuple[int, int]],
        prot: int,
        flags: int,
        *,
        name: str = "",
        offset: int = 0,
        device: int = 0,
        inode: int = 0,
        vnode: object = None,
        may_write: bool = False,
        lender: FrameLender | None = None,
    ) -> int:
        """Map runs of (frame address, page count) that another owner keeps alive.

        The runs are mapped one after another from ``start``, one area each.
        They are writable only for a shared mapping whose owner allows it
        (``may_write``); ``lender``, when given, is told that this address
        space maps its frames. Returns the number of bytes mapped.
        """
        may_write = may_write and bool(flags & MAP_SHARED)
        if prot & PROT_WRITE and not may_write:
            raise MappingDenied("these borrowed frames may not be written")
        position = start
        for pa, npages in runs:
            size = npages << PAGE_SHIFT
            area = VmArea(
                position,
                position + size,
                prot,
                flags,
                pa,
                name=name,
                offset=offset + (position - start),
                device=device,
                inode=inode,
                borrowed=True,
                vnode=vnode,
                may_write=may_write,
                lender=lender,
            )
            if prot != PROT_NONE:
                self.pt.map(position, pa, npages, leaf_flags(prot))
            self._insert(area)
            position += size
        self._last = None
        if lender is not None and runs:
            lender.lent(self)
        return position - start

    def _unshare(self, area: VmArea) -> None:
        """Give a private borrowed area frames of its own holding the same bytes."""
        npages = area.npages
        pa = self.phys.allocate(npages, area.start & HUGE_MASK)
        old = area.pa
        size = npages << PAGE_SHIFT
        self.ram[pa : pa + size] = self.ram[old : old + size]
        area.pa = pa
        area.borrowed = False
        if area.prot != PROT_NONE:
            self.pt.map(area.start, pa, npages, leaf_flags(area.prot))
            # The program may still hold translations to the shared frames.
            self._zap(area, old, npages)
        lender, area.lender = area.lender, None
        if lender is not None:
            lender.returned(self)

    def maps_lender(self, lender: FrameLender) -> bool:
        """Whether any area maps (or, past the end of the file, stands for)
        frames of ``lender``."""
        return any(area.lender is lender for area in self.areas)

    def refit_lender(self, lender: FrameLender, size: int) -> None:
        """Make the mappings of ``lender``'s frames fit a file of ``size`` bytes.

        Pages wholly past the new end lose their frames and raise SIGBUS
        from now on; pages past the old end that the file now covers get its
        frames, in shared mappings and in private ones never made writable.
        """
        # Rationale: Linux gives a mapping the file's current pages at each
        # fault, so truncating a mapped file makes the cut pages raise
        # SIGBUS, and growing it makes the pages past the old end usable.
        # Areas here are mapped when created; the lender calls this for
        # every address space that maps it when its size changes, before
        # freeing frames it no longer needs: no translation may outlive
        # them.
        eof = page_align_up(size)
        mine = [area for area in self.areas if area.lender is lender]
        for area in mine:
            if area.beyond_eof or area.offset + (area.end - area.start) <= eof:
                continue
            cut = area.start + max(eof - area.offset, 0)
            for piece in self._isolate(cut, area.end):
                if piece.lender is lender and piece.pa >= 0:
                    self._drop_to_beyond_eof(piece)
        for area in mine:
            if not area.beyond_eof or area.offset >= eof:
                continue
            if not area.flags & MAP_SHARED and area.prot & PROT_WRITE:
                # A private copy made writable would need its own frames for
                # pages that were never there; they keep raising SIGBUS.
                continue
            stop = min(area.end, area.start + (eof - area.offset))
            for piece in self._isolate(area.start, stop):
                if piece.lender is lender and piece.beyond_eof:
                    self._fill_from_lender(piece)
        self._last = None

    def _drop_to_beyond_eof(self, area: VmArea) -> None:
        """Unmap a borrowed area's frames; it stands for pages past the end."""
        if area.prot != PROT_NONE:
            self.pt.unmap(area.start, area.npages)
        self._zap(area, area.pa, area.npages)
        area.pa = -1
        area.borrowed = False
        area.beyond_eof = True

    def _fill_from_lender(self, area: VmArea) -> None:
        """Give a beyond-end area of a lender's mapping the lender's frames."""
        lender = area.lender
        try:
            runs = lender.lender_runs(area.offset, area.end - area.start)
        except OutOfMemoryError as error:
            logger.warning(
                "pages %#x-%#x of %s stay past the end of the file: %s",
                area.start,
                area.end,
                area.name or "a file mapping",
                error,
            )
            return
        self.areas.remove(area)
        self._reindex()
        self.map_borrowed(
            area.start,
            runs,
            area.prot,
            area.flags,
            name=area.name,
            offset=area.offset,
            device=area.device,
            inode=area.inode,
            vnode=area.vnode,
            may_write=area.may_write,
            lender=lender,
        )

    def reserve(self, start: int, length: int) -> None:
        """Keep [start, start + length) for the kernel: never mapped for the program."""
        self._insert(VmArea(start, start + length, PROT_NONE, 0, pa=0, hidden=True))

    def map_fixed_frames(self, va: int, pa: int, npages: int, flags: int) -> None:
        """Map frames that the kernel owns (its own structures) outside any area."""
        self.pt.map(va, pa, npages, flags)

    def unmap(self, start: int, length: int) -> None:
        """Remove every mapping in [start, start + length) (munmap semantics)."""
        end = start + page_align_up(length)
        removed = self._isolate(start, end)
        if not removed:
            return
        for area in removed:
            if area.hidden:
                raise MemoryFault("range belongs to the kernel")
        for area in removed:
            self.pt.unmap(area.start, area.npages)
            self._release_frames(area)
            self.areas.remove(area)
        self._reindex()
        # Told last, so that a lender looking for areas still mapping it
        # sees the address space as it now is.
        lenders = {id(a.lender): a.lender for a in removed if a.lender is not None}
        for lender in lenders.values():
            lender.returned(self)

    def _release_frames(self, area: VmArea) -> None:
        if area.borrowed:
            # The owner keeps the frames; only the translations must go.
            self._zap(area, area.pa, area.npages)
        elif area.pa >= 0:
            self.phys.free(area.pa, area.npages)
        else:
            for pa in area.pages.values():
                self.phys.free(pa, 1)
            area.pages.clear()

    def protect(self, start: int, length: int, prot: int) -> None:
        """Change the protection of [start, start + length) (mprotect semantics)."""
        end = start + page_align_up(length)
        covered = self._overlapping(start, end)
        # Linux fails with ENOMEM when part of the range is not mapped.
        position = start
        for area in covered:
            if area.start > position or area.hidden:
                raise MemoryFault("range not mapped")
            position = area.end
        if position < end:
            raise MemoryFault("range not mapped")
        if prot & PROT_WRITE:
            for area in self._overlapping(start, end):
                # As Linux: a shared file mapping becomes writable only when
                # its descriptor was open for writing (VM_MAYWRITE), and
                # only when writes reach the file (frames it lends).
                file_backed = area.borrowed or area.vnode is not None
                if area.flags & MAP_SHARED and file_backed and not area.may_write:
                    raise MappingDenied("shared file mapping cannot be made writable")
        for area in self._isolate(start, end):
            old = area.prot
            if old == prot:
                continue
            if area.borrowed and prot & PROT_WRITE and not area.flags & MAP_SHARED:
                # A private mapping about to be written becomes a copy.
                self._unshare(area)
            if prot & PROT_WRITE:
                area.token = None
            area.prot = prot
            downgrade = bool(old & ~prot) or (old and not prot)
            if area.pa >= 0:
                if prot == PROT_NONE:
                    self.pt.unmap(area.start, area.npages)
                else:
                    self.pt.map(area.start, area.pa, area.npages, leaf_flags(prot))
                if downgrade:
                    self._zap(area, area.pa, area.npages)
                continue
            if prot == PROT_NONE:
                self.pt.unmap(area.start, area.npages)
            else:
                self._protect_lazy(area, prot)
            if downgrade:
                for pa in area.pages.values():
                    self.phys.zap(pa, 1)
        self._last = None

    def remap_file(
        self,
        start: int,
        length: int,
        prot: int,
        offset: int,
        name: str,
        token: object = None,
        lender: FrameLender | None = None,
    ) -> bool:
        """Serve a fixed private mapping of a file from pages that hold it already.

        A dynamic linker maps a library's whole span first, then each
        segment over it at the same place of the file. Where every page of
        [start, start + length) shows the file from ``offset`` on, either
        as a private copy whose content token is still ``token`` (so
        neither the file nor the copy has changed) or as frames borrowed
        from ``lender`` (the file's own), the new mapping would map the same
        bytes again: the pages only take ``prot``, and ``name`` (the file's
        path now) for /proc/self/maps. Returns whether that was done; the
        caller maps afresh otherwise.
        """
        if token is None and lender is None:
            return False
        end = start + page_align_up(length)
        position = start
        for area in self._overlapping(start, end):
            same = (token is not None and area.token is token) or (
                lender is not None
                and area.lender is lender
                and area.borrowed
                and not area.flags & MAP_SHARED
            )
            if (
                not same
                or area.start > position
                or area.offset + (position - area.start) != offset + (position - start)
            ):
                return False
            position = area.end
        if position < end:
            return False
        self.protect(start, end - start, prot)
        for area in self._isolate(start, end):
            area.name = name
        return True

    def _zap(self, area: VmArea, pa: int, npages: int) -> None:
        """Drop cached translations of ``area``'s frames (see PhysicalMemory.zap)."""
        self.phys.zap(pa, npages)

    def discard(self, start: int, length: int) -> None:
        """MADV_DONTNEED: private pages read again as their source has them.

        Anonymous private memory reads back as zeros, and its host memory
        goes back to the host; a private file mapping shows the file's bytes
        again. Shared memory, and pages shared from a file system's cache,
        keep what they hold, as on Linux.
        """
        end = start + page_align_up(length)
        for area in self._overlapping(start, end):
            if area.hidden:
                raise MemoryFault("range belongs to the kernel")
        for area in self._overlapping(start, end):
            if area.flags & MAP_SHARED or area.borrowed:
                continue
            lo, hi = max(start, area.start), min(end, area.end)
            if area.pa >= 0:
                pa = area.pa + (lo - area.start)
                self.phys.discard(pa, (hi - lo) >> PAGE_SHIFT)
                self._refill(area, lo, self.ram[pa : pa + hi - lo])
                continue
            for vpn in range(lo >> PAGE_SHIFT, hi >> PAGE_SHIFT):
                pa = area.pages.get(vpn)
                if pa is None:
                    continue
                if area.vnode is None:
                    del area.pages[vpn]
                    self.pt.unmap(vpn << PAGE_SHIFT, 1)
                    self.phys.free(pa, 1)
                else:
                    self.phys.discard(pa, 1)
                    self._refill(area, vpn << PAGE_SHIFT, self.ram[pa : pa + PAGE_SIZE])

    def _refill(self, area: VmArea, address: int, view: memoryview) -> None:
        """Read a file-backed area's bytes at ``address`` into ``view`` (zeros past EOF)."""
        if area.vnode is not None:
            area.vnode.readinto(area.offset + (address - area.start), view)

    def _protect_lazy(self, area: VmArea, prot: int) -> None:
        flags = leaf_flags(prot)
        if area.end - area.start <= POPULATE_ON_PROTECT and not area.beyond_eof:
            missing = [
                vpn
                for vpn in range(area.start >> PAGE_SHIFT, area.end >> PAGE_SHIFT)
                if vpn not in area.pages
            ]
            if missing:
                run = self.phys.allocate(len(missing))
                for i, vpn in enumerate(missing):
                    area.pages[vpn] = run + (i << PAGE_SHIFT)
        for vpn, pa in area.pages.items():
            self.pt.map_page(vpn << PAGE_SHIFT, pa, flags)

    def populate(self, address: int, write: bool) -> bool:
        """Serve a demand fault in a lazy area; False if the access is not allowed.

        The faulting page and the other missing pages of its aligned
        FAULT_AROUND block get frames at once: a program that touches one
        page of a large reservation usually touches its neighbours next, and
        each fault avoided saves a trip through the exception stub.
        """
        area = self.find(address)
        if area is None or area.pa >= 0 or area.beyond_eof:
            return False
        prot = area.prot
        if not prot & PROT_READ or (write and not prot & PROT_WRITE):
            return False
        flags = leaf_flags(prot)
        vpn = address >> PAGE_SHIFT
        pa = area.pages.get(vpn)
        if pa is not None:
            self.pt.map_page(vpn << PAGE_SHIFT, pa, flags)
            return True
        block = FAULT_AROUND >> PAGE_SHIFT
        first = max(vpn & ~(block - 1), area.start >> PAGE_SHIFT)
        last = min((vpn | (block - 1)) + 1, area.end >> PAGE_SHIFT)
        missing = [v for v in range(first, last) if v not in area.pages]
        try:
            run = self.phys.allocate(len(missing))
        except OutOfMemoryError:
            missing, run = [vpn], self.phys.allocate(1)
        for i, page in enumerate(missing):
            area.pages[page] = run + (i << PAGE_SHIFT)
            self.pt.map_page(page << PAGE_SHIFT, run + (i << PAGE_SHIFT), flags)
        return True

    # ---- brk ----------------------------------------------------------------

    def set_brk_start(self, address: int) -> None:
        self.brk_start = self.brk = page_align_up(address)

    def set_brk(self, address: int) -> int:
        """brk(2): move the program break; return the (possibly unchanged) break."""
        if address < self.brk_start:
            return self.brk
        old_top = page_align_up(self.brk)
        new_top = page_align_up(address)
        if new_top > old_top:
            if self._overlapping(old_top, new_top):
                return self.brk
            try:
                self.map_area(
                    old_top, new_top - old_top, PROT_READ | PROT_WRITE, name="[heap]"
                )
            except Exception:  # noqa: BLE001 - out of memory keeps the old break
                logger.debug("brk to %#x refused: out of memory", address)
                return self.brk
        elif new_top < old_top:
            self.unmap(new_top, old_top - new_top)
        self.brk = address
        return address

    # ---- copying to and from the program ------------------------------------

    def _span(self, address: int, size: int, write: bool) -> memoryview:
        """A RAM view of [address, address + size) inside one area's contiguous frames."""
        area = self.find(address)
        if area is None:
            raise MemoryFault(f"bad address {address:#x}")
        prot = area.prot
        if not prot & PROT_READ or (write and not prot & PROT_WRITE):
            raise MemoryFault(f"address {address:#x} not accessible")
        if area.pa >= 0:
            size = min(size, area.end - address)
            pa = area.pa + (address - area.start)
            return self.ram[pa : pa + size]
        vpn = address >> PAGE_SHIFT
        pa = area.pages.get(vpn)
        if pa is None:
            if not self.populate(address, write):
                raise MemoryFault(f"address {address:#x} is past the end of its file")
            pa = area.pages[vpn]
        in_page = address & (PAGE_SIZE - 1)
        size = min(size, PAGE_SIZE - in_page)
        return self.ram[pa + in_page : pa + in_page + size]

    def views(self, address: int, size: int, write: bool = False) -> list[memoryview]:
        """RAM views that together cover [address, address + size) of the program."""
        if size <= 0:
            return []
        first = self._span(address, size, write)
        if len(first) == size:
            return [first]
        views = [first]
        done = len(first)
        while done < size:
            view = self._span(address + done, size - done, write)
            views.append(view)
            done += len(view)
        return views

    def read(self, address: int, size: int) -> bytes:
        """Copy ``size`` bytes out of the program's memory."""
        views = self.views(address, size)
        if len(views) == 1:
            return views[0].tobytes()
        return b"".join(v.tobytes() for v in views)

    def write(self, address: int, data: bytes | memoryview) -> None:
        """Copy bytes into the program's memory."""
        data = memoryview(data)
        done = 0
        for view in self.views(address, len(data), write=True):
            view[:] = data[done : done + len(view)]
            done += len(view)

    def write_kernel(self, address: int, data: bytes | memoryview) -> None:
        """Copy into the program's memory ignoring its protection (loader use)."""
        data = memoryview(data)
        done = 0
        for view in self.kernel_views(address, len(data)):
            view[:] = data[done : done + len(view)]
            done += len(view)

    def kernel_views(self, address: int, size: int) -> list[memoryview]:
        """RAM views of a range ignoring its protection (filling a new mapping)."""
        views = []
        done = 0
        while done < size:
            area = self.find(address + done)
            if area is None:
                raise MemoryFault(f"bad address {address + done:#x}")
            if area.pa >= 0:
                if area.borrowed and not area.may_write:
                    self._unshare(area)
                pa = area.pa + (address + done - area.start)
                count = min(size - done, area.end - address - done)
            else:
                if area.beyond_eof:
                    raise MemoryFault(
                        f"address {address + done:#x} is past end of file"
                    )
                vpn = (address + done) >> PAGE_SHIFT
                if vpn not in area.pages:
                    area.pages[vpn] = self.phys.allocate(1)
                in_page = (address + done) & (PAGE_SIZE - 1)
                pa = area.pages[vpn] + in_page
                count = min(size - done, PAGE_SIZE - in_page)
            views.append(self.ram[pa : pa + count])
            done += count
        return views

    def read_cstring(self, address: int, limit: int = 4096) -> bytes:
        """Read a NUL-terminated string (without the NUL); EFAULT past ``limit``."""
        chunks = []
        total = 0
        while total < limit:
            view = self._span(address + total, min(256, limit - total), False)
            chunk = view.tobytes()
            nul = chunk.find(b"\0")
            if nul >= 0:
                chunks.append(chunk[:nul])
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
        raise MemoryFault("string too long")

    def read_u64(self, address: int) -> int:
        return int.from_bytes(self.read(address, 8), "little")

    def write_u64(self, address: int, value: int) -> None:
        self.write(address, (value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))

    # ---- reporting ---------------------------------------------------------

    def maps_text(self, name_of: Callable[[VmArea], str] | None = None) -> str:
        """/proc/self/maps: adjacent areas with equal attributes shown as one line.

        ``name_of`` gives each area's name as it should read now (a file
        renamed or removed since it was mapped); without it, the name the
        area was mapped under.
        """
        lines = []
        previous: VmArea | None = None
        for area in self.areas:
            if area.hidden:
                continue
            name = area.name if name_of is None else name_of(area)
            if (
                previous is not None
                and previous.end == area.start
                and previous.prot == area.prot
                and previous.flags == area.flags
                and previous.name == name
                and previous.device == area.device
                and previous.inode == area.inode
                and (
                    not area.inode
                    or previous.offset + (previous.end - previous.start) == area.offset
                )
            ):
                previous.end = area.end
                lines[-1] = previous.maps_line()
                continue
            previous = VmArea(
                area.start,
                area.end,
                area.prot,
                area.flags,
                name=name,
                offset=area.offset,
                device=area.device,
                inode=area.inode,
            )
            lines.append(previous.maps_line())
        return "".join(line + "\n" for line in lines)

    @property
    def resident_bytes(self) -> int:
        return self.phys.used_bytes
