"""x86-64 four-level page tables, written by the kernel into guest memory."""

from __future__ import annotations

import logging
from array import array

from osv.mm._physmem import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory

logger = logging.getLogger(__name__)

# Page-table entry bits (Intel SDM vol. 3, 4.5).
PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_US = 1 << 2
PTE_A = 1 << 5
PTE_D = 1 << 6
PTE_PS = 1 << 7
PTE_NX = 1 << 63
PTE_ADDR = 0x000FFFFFFFFFF000

# A level-2 entry with PS set maps 2 MiB directly.
HUGE_SHIFT = 21
HUGE_SIZE = 1 << HUGE_SHIFT
HUGE_MASK = HUGE_SIZE - 1

# Upper levels allow everything; the leaf decides. The effective permission is
# the intersection over all four levels.
UPPER = PTE_P | PTE_RW | PTE_US | PTE_A
ENTRIES = 512


class PageTable:
    """One address space's PML4 and the tables below it.

    Leaves are 4 KiB pages, or 2 MiB pages where a mapping covers a whole
    2 MiB-aligned stretch of virtual addresses with 2 MiB-aligned frames.
    Entries are written with Accessed and Dirty preset, so the guest CPU never
    has to write a page-table entry itself.
    """

    # Rationale: guest memory is a host mapping, so "writing a PTE" is a store
    # into a memoryview of u64. Ranges are written one page table (512
    # entries, 2 MiB) at a time with a slice assignment from an array, which
    # keeps even a 100 MiB mapping at a few milliseconds of Python.
    #
    # 2 MiB leaves matter on KVM's shadow paging: the first guest touch of a
    # page mapped by a 4 KiB entry costs a shadow fault of 2-20 µs, while a
    # 2 MiB leaf over huge-page-backed host memory is shadowed whole, and its
    # 512 pages cost about 0.3 µs each. A 2 MiB leaf is split into a table of
    # 4 KiB entries, with the same frames and permissions, as soon as part of
    # it must change; the translations do not change, so the split needs no
    # invalidation.
    #
    # Tables are never freed or reused while the address space lives: an empty
    # table costs 4 KiB, and the shadow MMU does not see host writes to a page
    # table, so a table page handed to another range could keep serving the
    # old range's stale translations. A table replaced by a 2 MiB leaf is
    # simply dropped for the same reason.

    def __init__(self, phys: PhysicalMemory) -> None:
        self.phys = phys
        self.q = phys.ram_q
        self.root = phys.allocate_kernel()
        self.table_pages = 1
        self.huge_leaves = 0

    def _new_table(self) -> int:
        self.table_pages += 1
        return self.phys.allocate_kernel()

    def _directory(self, va: int, create: bool) -> int:
        """The u64 index of the level-2 entry covering ``va`` (-1 if absent)."""
        q = self.q
        table = self.root
        for shift in (39, 30):
            slot = (table >> 3) + ((va >> shift) & 0x1FF)
            entry = q[slot]
            if not entry & PTE_P:
                if not create:
                    return -1
                child = self._new_table()
                q[slot] = child | UPPER
                table = child
            else:
                table = entry & PTE_ADDR
        return (table >> 3) + ((va >> HUGE_SHIFT) & 0x1FF)

    def _split(self, slot: int) -> int:
        """Replace the 2 MiB leaf at ``slot`` by 512 equal 4 KiB leaves."""
        q = self.q
        entry = q[slot]
        child = self._new_table()
        # The same bits serve both leaf sizes, except PS (bit 7), which in a
        # 4 KiB entry would mean PAT.
        leaf = entry & ~PTE_PS
        base = child >> 3
        q[base : base + ENTRIES] = array(
            "Q", range(leaf, leaf + (ENTRIES << PAGE_SHIFT), PAGE_SIZE)
        )
        q[slot] = child | UPPER
        self.huge_leaves -= 1
        return base

    def _table(self, va: int) -> int:
        """Return the u64 index of the page table (level 1) covering ``va``."""
        slot = self._directory(va, True)
        entry = self.q[slot]
        if not entry & PTE_P:
            child = self._new_table()
            self.q[slot] = child | UPPER
            return child >> 3
        if entry & PTE_PS:
            return self._split(slot)
        return (entry & PTE_ADDR) >> 3

    def _existing_table(self, va: int) -> int:
        """Like _table, but return -1 instead of creating missing levels."""
        slot = self._directory(va, False)
        if slot < 0:
            return -1
        entry = self.q[slot]
        if not entry & PTE_P:
            return -1
        if entry & PTE_PS:
            return self._split(slot)
        return (entry & PTE_ADDR) >> 3

    def map(self, va: int, pa: int, npages: int, flags: int) -> None:
        """Map ``npages`` pages at ``va`` to the contiguous frames at ``pa``."""
        leaf = flags | PTE_P | PTE_A | PTE_D
        q = self.q
        end = va + (npages << PAGE_SHIFT)
        while va < end:
            if not (va | pa) & HUGE_MASK and end - va >= HUGE_SIZE:
                slot = self._directory(va, True)
                if not q[slot] & PTE_PS:
                    self.huge_leaves += 1
                q[slot] = pa | leaf | PTE_PS
                va += HUGE_SIZE
                pa += HUGE_SIZE
                continue
            base = self._table(va)
            first = (va >> PAGE_SHIFT) & 0x1FF
            count = min(ENTRIES - first, (end - va) >> PAGE_SHIFT)
            entry = pa | leaf
            q[base + first : base + first + count] = array(
                "Q", range(entry, entry + (count << PAGE_SHIFT), PAGE_SIZE)
            )
            va += count << PAGE_SHIFT
            pa += count << PAGE_SHIFT

    def map_page(self, va: int, pa: int, flags: int) -> None:
        """Map one page (the demand-paging path)."""
        self.q[self._table(va) + ((va >> PAGE_SHIFT) & 0x1FF)] = (
            pa | flags | PTE_P | PTE_A | PTE_D
        )

    def _whole_huge(self, va: int, end: int) -> int:
        """The level-2 slot of a 2 MiB leaf that [va, end) covers whole, or -1."""
        if va & HUGE_MASK or end - va < HUGE_SIZE:
            return -1
        slot = self._directory(va, False)
        if slot >= 0 and self.q[slot] & PTE_PS:
            return slot
        return -1

    def unmap(self, va: int, npages: int) -> None:
        """Clear the leaf entries of a range (tables that do not exist are skipped)."""
        q = self.q
        end = va + (npages << PAGE_SHIFT)
        while va < end:
            slot = self._whole_huge(va, end)
            if slot >= 0:
                q[slot] = 0
                self.huge_leaves -= 1
                va += HUGE_SIZE
                continue
            first = (va >> PAGE_SHIFT) & 0x1FF
            count = min(ENTRIES - first, (end - va) >> PAGE_SHIFT)
            base = self._existing_table(va)
            if base >= 0:
                q[base + first : base + first + count] = array("Q", bytes(8 * count))
            va += count << PAGE_SHIFT

    def protect(self, va: int, npages: int, flags: int) -> None:
        """Rewrite the permission bits of present leaves, keeping their frames."""
        q = self.q
        keep = PTE_ADDR
        leaf = flags | PTE_P | PTE_A | PTE_D
        end = va + (npages << PAGE_SHIFT)
        while va < end:
            slot = self._whole_huge(va, end)
            if slot >= 0:
                q[slot] = (q[slot] & keep) | leaf | PTE_PS
                va += HUGE_SIZE
                continue
            first = (va >> PAGE_SHIFT) & 0x1FF
            count = min(ENTRIES - first, (end - va) >> PAGE_SHIFT)
            base = self._existing_table(va)
            if base >= 0:
                for i in range(base + first, base + first + count):
                    entry = q[i]
                    if entry & PTE_P:
                        q[i] = (entry & keep) | leaf
            va += count << PAGE_SHIFT

    def lookup(self, va: int) -> int:
        """Return the 4 KiB leaf entry that translates ``va`` (0 when not mapped).

        Inside a 2 MiB leaf, the answer is the 4 KiB entry it stands for.
        """
        slot = self._directory(va, False)
        if slot < 0:
            return 0
        entry = self.q[slot]
        if not entry & PTE_P:
            return 0
        if entry & PTE_PS:
            return (entry & ~PTE_PS) + (va & HUGE_MASK & ~(PAGE_SIZE - 1))
        return self.q[((entry & PTE_ADDR) >> 3) + ((va >> PAGE_SHIFT) & 0x1FF)]
