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

# Upper levels allow everything; the leaf decides. The effective permission is
# the intersection over all four levels.
UPPER = PTE_P | PTE_RW | PTE_US | PTE_A
ENTRIES = 512


class PageTable:
    """One address space's PML4 and the tables below it.

    Leaves are always 4 KiB. Entries are written with Accessed and Dirty preset,
    so the guest CPU never has to write a page-table entry itself.
    """

    # Rationale: guest memory is a host mapping, so "writing a PTE" is a store
    # into a memoryview of u64. Ranges are written one page table (512
    # entries, 2 MiB) at a time with a slice assignment from an array, which
    # keeps even a 100 MiB mapping at a few milliseconds of Python. Tables
    # are never freed while the address space lives: an empty table costs
    # 4 KiB, and freeing one would need the same zapping dance as a frame.

    def __init__(self, phys: PhysicalMemory) -> None:
        self.phys = phys
        self.q = phys.ram_q
        self.root = phys.allocate_kernel()
        self.table_pages = 1

    def _table(self, va: int) -> int:
        """Return the u64 index of the page table (level 1) covering ``va``."""
        q = self.q
        table = self.root
        for shift in (39, 30, 21):
            slot = (table >> 3) + ((va >> shift) & 0x1FF)
            entry = q[slot]
            if not entry & PTE_P:
                child = self.phys.allocate_kernel()
                self.table_pages += 1
                q[slot] = child | UPPER
                table = child
            else:
                table = entry & PTE_ADDR
        return table >> 3

    def _existing_table(self, va: int) -> int:
        """Like _table, but return -1 instead of creating missing levels."""
        q = self.q
        table = self.root
        for shift in (39, 30, 21):
            entry = q[(table >> 3) + ((va >> shift) & 0x1FF)]
            if not entry & PTE_P:
                return -1
            table = entry & PTE_ADDR
        return table >> 3

    def map(self, va: int, pa: int, npages: int, flags: int) -> None:
        """Map ``npages`` pages at ``va`` to the contiguous frames at ``pa``."""
        leaf = flags | PTE_P | PTE_A | PTE_D
        q = self.q
        end = va + (npages << PAGE_SHIFT)
        while va < end:
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

    def unmap(self, va: int, npages: int) -> None:
        """Clear the leaf entries of a range (tables that do not exist are skipped)."""
        q = self.q
        end = va + (npages << PAGE_SHIFT)
        while va < end:
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
        """Return the leaf entry for ``va`` (0 when not mapped)."""
        base = self._existing_table(va)
        if base < 0:
            return 0
        return self.q[base + ((va >> PAGE_SHIFT) & 0x1FF)]
