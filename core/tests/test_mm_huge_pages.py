"""2 MiB page-table leaves, phase-aligned frames and borrowed (shared-cache) areas."""

from __future__ import annotations

import pytest

from osv.mm import (
    HUGE_SIZE,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    AddressSpace,
    MappingDenied,
    PhysicalMemory,
)
from osv.mm._pagetable import PTE_P, PTE_PS, PTE_RW

RESERVED = 2 << 20
VA = 0x7F0000000000


@pytest.fixture
def phys() -> PhysicalMemory:
    return PhysicalMemory(64 << 20, reserved=RESERVED)


def leaf_address(entry: int) -> int:
    return entry & 0x000FFFFFFFFFF000


def test_aligned_allocation_honours_the_phase(phys):
    phys.allocate(3)  # leave the free list at an odd place
    pa = phys.allocate(HUGE_SIZE // PAGE_SIZE * 2, 0)
    assert pa % HUGE_SIZE == 0
    odd = phys.allocate(HUGE_SIZE // PAGE_SIZE, 5 * PAGE_SIZE)
    assert odd % HUGE_SIZE == 5 * PAGE_SIZE
    # The frames skipped to reach the phase stay free and are handed out next.
    small = phys.allocate(1)
    assert small < pa


def test_aligned_range_maps_with_a_2mib_leaf_and_splits_on_partial_change(phys):
    aspace = AddressSpace(phys)
    pt = aspace.pt
    pa = phys.allocate(1024, 0)
    pt.map(VA, pa, 1024, PTE_RW)
    assert pt.huge_leaves == 2
    tables = pt.table_pages
    # A lookup inside a 2 MiB leaf answers the 4 KiB page it stands for.
    entry = pt.lookup(VA + 0x12345)
    assert leaf_address(entry) == pa + 0x12000
    assert entry & PTE_P and entry & PTE_RW and not entry & PTE_PS

    # Unmapping one page splits that leaf only; its other 511 pages stay.
    pt.unmap(VA + 7 * PAGE_SIZE, 1)
    assert pt.huge_leaves == 1
    assert pt.table_pages == tables + 1
    assert pt.lookup(VA + 7 * PAGE_SIZE) == 0
    assert leaf_address(pt.lookup(VA + 8 * PAGE_SIZE)) == pa + 8 * PAGE_SIZE
    assert leaf_address(pt.lookup(VA + HUGE_SIZE - PAGE_SIZE)) == (
        pa + HUGE_SIZE - PAGE_SIZE
    )

    # Protecting a whole 2 MiB leaf rewrites it in place.
    pt.protect(VA + HUGE_SIZE, 512, 0)
    assert pt.huge_leaves == 1
    assert not pt.lookup(VA + HUGE_SIZE + PAGE_SIZE) & PTE_RW
    # Unmapping a whole leaf clears it without a split.
    pt.unmap(VA + HUGE_SIZE, 512)
    assert pt.huge_leaves == 0
    assert pt.lookup(VA + HUGE_SIZE) == 0


def test_misaligned_frames_use_small_leaves(phys):
    pt = AddressSpace(phys).pt
    pa = phys.allocate(1024, PAGE_SIZE)
    pt.map(VA, pa, 1024, PTE_RW)
    assert pt.huge_leaves == 0
    assert leaf_address(pt.lookup(VA + HUGE_SIZE)) == pa + HUGE_SIZE


def test_large_anonymous_areas_are_placed_for_2mib_leaves(phys):
    aspace = AddressSpace(phys)
    start = aspace.free_range(5 << 20, phase=0)
    assert start % HUGE_SIZE == 0
    area = aspace.map_area(start, 5 << 20, PROT_READ | PROT_WRITE)
    assert area.pa % HUGE_SIZE == 0
    assert aspace.pt.huge_leaves == 2
    file_start = aspace.free_range(4 << 20, phase=3 * PAGE_SIZE)
    assert file_start % HUGE_SIZE == 3 * PAGE_SIZE


def test_borrowed_frames_are_shared_and_survive_unmap(phys):
    aspace = AddressSpace(phys)
    cache = phys.allocate(512, 0)
    phys.ram[cache : cache + 5] = b"cache"
    free_before = phys.free_frames
    aspace.map_borrowed(VA, [(cache, 512)], PROT_READ, MAP_PRIVATE, inode=7)
    other = VA + (4 << 20)
    aspace.map_borrowed(other, [(cache, 512)], PROT_READ, MAP_SHARED, inode=7)
    # No frame was taken for the data, only page tables.
    mapped = phys.free_frames
    assert free_before - mapped == aspace.pt.table_pages - 1
    assert aspace.read(VA, 5) == aspace.read(other, 5) == b"cache"
    aspace.unmap(VA, HUGE_SIZE)
    # The owner's frames are neither freed nor wiped.
    assert phys.free_frames == mapped
    assert bytes(phys.ram[cache : cache + 5]) == b"cache"


def test_writing_a_private_borrowed_area_copies_it_first(phys):
    aspace = AddressSpace(phys)
    cache = phys.allocate(16)
    phys.ram[cache : cache + 4] = b"file"
    aspace.map_borrowed(VA, [(cache, 16)], PROT_READ, MAP_PRIVATE, inode=7)
    aspace.protect(VA, PAGE_SIZE, PROT_READ | PROT_WRITE)
    aspace.write(VA, b"mine")
    assert aspace.read(VA, 4) == b"mine"
    assert bytes(phys.ram[cache : cache + 4]) == b"file"
    # The rest of the area still shows the file's bytes.
    phys.ram[cache + PAGE_SIZE : cache + PAGE_SIZE + 4] = b"more"
    assert aspace.read(VA + PAGE_SIZE, 4) == b"more"


def test_shared_borrowed_area_cannot_become_writable(phys):
    aspace = AddressSpace(phys)
    cache = phys.allocate(4)
    aspace.map_borrowed(VA, [(cache, 4)], PROT_READ, MAP_SHARED, inode=7)
    with pytest.raises(MappingDenied):
        aspace.protect(VA, PAGE_SIZE, PROT_READ | PROT_WRITE)
    with pytest.raises(MappingDenied):
        aspace.map_borrowed(VA + HUGE_SIZE, [(cache, 4)], PROT_WRITE, MAP_SHARED)


def test_adjacent_pieces_of_one_file_mapping_show_as_one_maps_line(phys):
    aspace = AddressSpace(phys)
    first, second = phys.allocate(512, 0), phys.allocate(512, 0)
    aspace.map_borrowed(
        VA, [(first, 512), (second, 512)], PROT_READ, MAP_PRIVATE,
        name="/data", inode=9, device=0x801,
    )  # fmt: skip
    lines = aspace.maps_text().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{VA:08x}-{VA + (4 << 20):08x} r--p 00000000 08:01 9")


@pytest.mark.parametrize("operation", ["unmap", "protect", "fixed"])
def test_changing_the_middle_of_an_area_leaves_the_rest_alone(phys, operation):
    aspace = AddressSpace(phys)
    aspace.map_area(VA, 16 * PAGE_SIZE, PROT_READ | PROT_WRITE)
    for i in range(16):
        aspace.write(VA + i * PAGE_SIZE, bytes([i + 1]))
    middle = VA + 3 * PAGE_SIZE
    if operation == "unmap":
        aspace.unmap(middle, PAGE_SIZE)
    elif operation == "protect":
        aspace.protect(middle, PAGE_SIZE, 0)
    else:
        aspace.unmap(middle, PAGE_SIZE)
        aspace.map_area(middle, PAGE_SIZE, PROT_READ | PROT_WRITE)
    rw = PROT_READ | PROT_WRITE
    expected = {
        "unmap": [(VA, middle, rw), (middle + PAGE_SIZE, VA + 16 * PAGE_SIZE, rw)],
        "protect": [
            (VA, middle, rw),
            (middle, middle + PAGE_SIZE, 0),
            (middle + PAGE_SIZE, VA + 16 * PAGE_SIZE, rw),
        ],
        "fixed": [
            (VA, middle, rw),
            (middle, middle + PAGE_SIZE, rw),
            (middle + PAGE_SIZE, VA + 16 * PAGE_SIZE, rw),
        ],
    }[operation]
    assert [(a.start, a.end, a.prot) for a in aspace.areas] == expected
    for i in (0, 2, 4, 15):
        assert aspace.read(VA + i * PAGE_SIZE, 1) == bytes([i + 1])
        assert aspace.pt.lookup(VA + i * PAGE_SIZE) & PTE_RW
    if operation != "fixed":
        assert not aspace.pt.lookup(middle) & PTE_P
