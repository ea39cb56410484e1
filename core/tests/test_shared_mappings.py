"""Writable shared mappings of ramfs files: one with the file, as on Linux.

The first tests drive ramfs and the address space directly, in a guest
memory that needs no VM. The others run the same programs natively and in
the VM (C programs, sqlite3 in WAL mode, Python's mmap module) and compare
their output.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from guest import native, osv, program_output

from osv.mm import (
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    AddressSpace,
    MappingDenied,
    MemoryFault,
    PhysicalMemory,
)
from osv.vfs import O_CREAT, O_RDWR, FsError, RamFs, Vfs
from osv.vfs._ramfs import CHUNK_SIZE

VA = 0x7F0000000000
PYTHON = "/usr/bin/python3.11"
STDLIB = "/usr/lib/python3.11"
SQLITE = shutil.which("sqlite3")
needs_kvm = pytest.mark.skipif(
    not os.path.exists("/dev/kvm"), reason="boots VMs: needs /dev/kvm"
)


# ---- ramfs and the address space, without a VM ------------------------------


@pytest.fixture
def phys() -> PhysicalMemory:
    return PhysicalMemory(64 << 20, reserved=2 << 20)


@pytest.fixture
def vfs(phys: PhysicalMemory) -> Vfs:
    vfs = Vfs()
    fs = RamFs(lambda: (phys.size, phys.free_frames * PAGE_SIZE), phys)
    vfs.mount(fs, "none", "/")
    return vfs


def map_shared(space: AddressSpace, file, length: int, va: int = VA) -> None:  # noqa: ANN001
    """What mmap(MAP_SHARED, PROT_READ | PROT_WRITE) of ``file`` does."""
    vnode = file.vnode
    in_file = min(length, -(-vnode.size // PAGE_SIZE) * PAGE_SIZE)
    runs = vnode.lend_frames(0, in_file, True)
    prot = PROT_READ | PROT_WRITE
    if in_file < length:
        space.map_area(
            va + in_file, length - in_file, prot, MAP_SHARED, offset=in_file,
            beyond_eof=True, may_write=True, lender=vnode, vnode=vnode,
        )  # fmt: skip
    space.map_borrowed(
        va, runs, prot, MAP_SHARED, may_write=True, lender=vnode, vnode=vnode
    )


def test_ramfs_outside_a_kernel_keeps_files_out_of_guest_frames():
    vfs = Vfs()
    vfs.mount(RamFs(), "none", "/")
    file = vfs.open("/f", O_RDWR | O_CREAT, 0o644)
    file.write(b"data")
    # sys_mmap answers ENODEV for a shared writable mapping then.
    assert file.vnode.lend_frames(0, PAGE_SIZE, True) is None


def test_stores_through_two_mappings_and_file_io_see_each_other(phys, vfs):
    file = vfs.open("/f", O_RDWR | O_CREAT, 0o644)
    file.write(b"x" * 10000)
    space = AddressSpace(phys)
    map_shared(space, file, 3 * PAGE_SIZE)
    map_shared(space, file, 3 * PAGE_SIZE, VA + (4 << 20))
    space.write(VA + 5000, b"store")
    assert space.read(VA + (4 << 20) + 5000, 5) == b"store"
    assert file.pread(5, 5000) == b"store"
    file.pwrite(b"write", 9000)
    assert space.read(VA + 9000, 5) == b"write"
    # Past the end of the file, the last page reads as zeros.
    assert space.read(VA + 10000, 4) == bytes(4)


def test_cut_pages_raise_sigbus_and_come_back_as_zeros(phys, vfs):
    file = vfs.open("/f", O_RDWR | O_CREAT, 0o644)
    file.write(b"a" * (4 * PAGE_SIZE))
    space = AddressSpace(phys)
    map_shared(space, file, 4 * PAGE_SIZE)
    file.truncate(PAGE_SIZE + 100)
    # Two pages keep frames; the rest are past the end (SIGBUS on touch).
    assert space.read(VA + PAGE_SIZE + 99, 2) == b"a\0"
    with pytest.raises(MemoryFault):
        space.read(VA + 2 * PAGE_SIZE, 1)
    assert not space.populate(VA + 3 * PAGE_SIZE, False)

    file.truncate(4 * PAGE_SIZE)
    assert space.read(VA + PAGE_SIZE + 100, 3 * PAGE_SIZE - 100) == bytes(
        3 * PAGE_SIZE - 100
    )
    space.write(VA + 3 * PAGE_SIZE, b"z")
    assert file.pread(1, 3 * PAGE_SIZE) == b"z"


def test_growing_by_write_gives_a_longer_mapping_the_new_pages(phys, vfs):
    file = vfs.open("/f", O_RDWR | O_CREAT, 0o644)
    file.write(b"a")
    space = AddressSpace(phys)
    map_shared(space, file, 8 * PAGE_SIZE)
    with pytest.raises(MemoryFault):
        space.read(VA + PAGE_SIZE, 1)
    # Past the first 2 MiB chunk too: the hole gets its frames when mapped.
    file.pwrite(b"far", CHUNK_SIZE + 10)
    file.pwrite(b"near", 5 * PAGE_SIZE)
    assert space.read(VA + 5 * PAGE_SIZE, 4) == b"near"
    assert space.read(VA + 7 * PAGE_SIZE, 1) == b"\0"
    assert file.vnode.size == CHUNK_SIZE + 13


@pytest.mark.parametrize(
    "order", list(itertools.permutations(["unlink", "close", "unmap"]))
)
def test_frames_go_back_only_after_the_last_reference(phys, vfs, order):
    space = AddressSpace(phys)
    mount = vfs.root.mount
    # The page tables for the range exist before counting frames.
    space.map_area(VA, PAGE_SIZE, PROT_READ)
    space.unmap(VA, PAGE_SIZE)
    free, used = phys.free_frames, mount.used

    file = vfs.open("/f", O_RDWR | O_CREAT, 0o644)
    file.write(b"kept")
    map_shared(space, file, PAGE_SIZE)
    assert phys.free_frames == free - CHUNK_SIZE // PAGE_SIZE
    assert mount.used == used + CHUNK_SIZE
    steps = {
        "unlink": lambda: vfs.unlink("/f"),
        "close": file.close,
        "unmap": lambda: space.unmap(VA, PAGE_SIZE),
    }
    for done, step in enumerate(order[:-1]):
        steps[step]()
        assert phys.free_frames == free - CHUNK_SIZE // PAGE_SIZE
        if "unmap" not in order[: done + 1]:
            assert space.read(VA, 4) == b"kept"
    steps[order[-1]]()
    assert (phys.free_frames, mount.used) == (free, used)


def test_a_file_renamed_over_lives_on_in_its_mapping(phys, vfs):
    space = AddressSpace(phys)
    file = vfs.open("/old", O_RDWR | O_CREAT, 0o644)
    file.write(b"first")
    map_shared(space, file, PAGE_SIZE)
    file.close()
    vfs.open("/new", O_RDWR | O_CREAT, 0o644).close()
    free = phys.free_frames
    vfs.rename("/new", "/old")
    assert phys.free_frames == free
    assert space.read(VA, 5) == b"first"
    space.unmap(VA, PAGE_SIZE)
    assert phys.free_frames == free + CHUNK_SIZE // PAGE_SIZE


def test_a_file_read_from_a_lower_file_system_moves_into_frames(phys, vfs):
    lower_vfs = Vfs()
    lower_vfs.mount(RamFs(), "none", "/")
    lower = lower_vfs.open("/image-file", O_RDWR | O_CREAT, 0o644)
    lower.write(b"from the image")
    upper = vfs.root.create("copy", 0o100644)
    upper.back_by(lower.vnode)
    file = upper.open(O_RDWR, "/copy")
    space = AddressSpace(phys)
    map_shared(space, file, PAGE_SIZE)
    assert space.read(VA, 14) == b"from the image"
    space.write(VA, b"FROM")
    assert file.pread(14, 0) == b"FROM the image"
    assert lower.pread(14, 0) == b"from the image"


def test_a_full_mount_refuses_the_frames_with_enomem(phys):
    vfs = Vfs()
    # A capacity of one chunk and a page (half of the memory reported).
    memory = 2 * (CHUNK_SIZE + PAGE_SIZE)
    vfs.mount(RamFs(lambda: (memory, 0), phys), "none", "/")
    first = vfs.open("/first", O_RDWR | O_CREAT, 0o644)
    first.write(b"1")
    assert first.vnode.lend_frames(0, PAGE_SIZE, True)
    second = vfs.open("/second", O_RDWR | O_CREAT, 0o644)
    second.write(b"2")
    with pytest.raises(FsError) as caught:
        second.vnode.lend_frames(0, PAGE_SIZE, True)
    assert caught.value.errno == errno.ENOMEM
    # The refused file keeps its bytes where they were.
    assert second.pread(1, 0) == b"2"
    assert vfs.root.mount.used == CHUNK_SIZE + 1


def test_only_a_may_write_shared_area_becomes_writable(phys, vfs):
    file = vfs.open("/f", O_RDWR | O_CREAT, 0o644)
    file.write(b"x")
    runs = file.vnode.lend_frames(0, PAGE_SIZE, True)
    space = AddressSpace(phys)
    space.map_borrowed(VA, runs, PROT_READ, MAP_SHARED, lender=file.vnode)
    with pytest.raises(MappingDenied):
        space.protect(VA, PAGE_SIZE, PROT_READ | PROT_WRITE)
    with pytest.raises(MappingDenied):
        space.map_borrowed(VA + PAGE_SIZE, runs, PROT_WRITE, MAP_SHARED)
    # may_write means nothing to a private mapping: it is copied when written.
    with pytest.raises(MappingDenied):
        space.map_borrowed(
            VA + PAGE_SIZE, runs, PROT_WRITE, MAP_PRIVATE, may_write=True
        )

    space.map_borrowed(
        VA + (2 << 20), runs, PROT_READ, MAP_SHARED, may_write=True, lender=file.vnode
    )
    space.protect(VA + (2 << 20), PAGE_SIZE, PROT_READ | PROT_WRITE)
    space.write(VA + (2 << 20), b"y")
    assert file.pread(1, 0) == b"y"


def test_a_private_mapping_made_writable_stops_borrowing(phys, vfs):
    file = vfs.open("/f", O_RDWR | O_CREAT, 0o644)
    file.write(b"file")
    space = AddressSpace(phys)
    map_shared(space, file, PAGE_SIZE)
    runs = file.vnode.lend_frames(0, PAGE_SIZE, False)
    private = VA + (2 << 20)
    space.map_borrowed(private, runs, PROT_READ, MAP_PRIVATE, lender=file.vnode)
    # Unwritten, it shows the file as it changes, as on Linux.
    file.pwrite(b"F", 0)
    assert space.read(private, 4) == b"File"
    space.protect(private, PAGE_SIZE, PROT_READ | PROT_WRITE)
    space.write(private, b"mine")
    assert file.pread(4, 0) == b"File"
    space.unmap(VA, PAGE_SIZE)
    file.close()
    free = phys.free_frames
    vfs.unlink("/f")
    # The private copy holds no reference: the file's frames went back.
    assert phys.free_frames == free + CHUNK_SIZE // PAGE_SIZE
    assert space.read(private, 4) == b"mine"


def test_a_large_image_file_lends_its_frames_to_private_read_only_maps(phys, vfs):
    image = bytes(range(256)) * (CHUNK_SIZE // 256) + b"tail"
    small = b"small" * 100
    root = vfs.resolve("/")
    big_node, small_node = root.create("big", 0o755), root.create("small", 0o755)
    big_node.share(memoryview(image))
    small_node.share(memoryview(small))

    # A small file is copied per mapping, as before.
    assert small_node.lend_frames(0, PAGE_SIZE, False) is None
    # A large one moves into frames once; every mapping gets the same ones.
    first = big_node.lend_frames(0, 2 * PAGE_SIZE, False)
    again = big_node.lend_frames(0, 2 * PAGE_SIZE, False)
    assert first == again
    space = AddressSpace(phys)
    space.map_borrowed(VA, first, PROT_READ, MAP_PRIVATE, lender=big_node)
    assert space.read(VA, 2 * PAGE_SIZE) == image[: 2 * PAGE_SIZE]
    tail = big_node.lend_frames(CHUNK_SIZE, PAGE_SIZE, False)
    space.map_borrowed(VA + CHUNK_SIZE, tail, PROT_READ, MAP_PRIVATE, lender=big_node)
    assert space.read(VA + CHUNK_SIZE, 8) == b"tail\0\0\0\0"

    # Written through the mapping, the page becomes the mapping's own.
    space.protect(VA, PAGE_SIZE, PROT_READ | PROT_WRITE)
    space.write(VA, b"mine")
    assert big_node.read(0, 4) == image[:4]
    assert space.read(VA + PAGE_SIZE, 4) == image[PAGE_SIZE : PAGE_SIZE + 4]


# ---- programs, natively and in the VM ------------------------------------------

# `shm TEST DIRECTORY` makes its files in DIRECTORY and prints what the
# mappings and the file calls see; a fault prints as minus the signal
# (-7 for SIGBUS, -11 for SIGSEGV). `stale` checks that no translation
# outlives munmap, mprotect or truncation while other mappings keep the
# frames; `race` unmaps a page another thread is storing to through another
# mapping (the VM must not stop); `leak` prints how much MemFree dropped
# over 200 rounds of create, map, store, unmap, close and unlink.
PROGRAM = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PG 4096L

static sigjmp_buf jump;
static void on_fault(int sig) { siglongjmp(jump, sig); }

/* The byte at p, or -SIGNAL when reading it faults. */
static int probe(char *p) {
    int sig = sigsetjmp(jump, 1);
    if (sig) return -sig;
    return *(volatile unsigned char *)p;
}

/* Store v at p; 0, or -SIGNAL when the store faults. */
static int poke(char *p, char v) {
    int sig = sigsetjmp(jump, 1);
    if (sig) return -sig;
    *(volatile char *)p = v;
    return 0;
}

static const char *dir;

/* DIR/name in a static buffer (each test keeps at most one at a time). */
static const char *at(const char *name) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static int make(const char *path, long size) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, size)) { perror(path); _exit(2); }
    return fd;
}

static void show(const char *what, char *base, int pages) {
    printf("%s:", what);
    for (int i = 0; i < pages; i++)
        printf(" %d/%d", probe(base + i * PG), probe(base + i * PG + PG - 1));
    printf("\n");
}

static int pair(void) {
    int fd = make(at("pair"), 3 * PG);
    char *a = mmap(0, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *b = mmap(0, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (a == MAP_FAILED || b == MAP_FAILED) { perror("mmap"); return 1; }
    strcpy(a + PG + 10, "through a");
    printf("b sees: %s\n", b + PG + 10);
    pwrite(fd, "by write", 8, 2 * PG + 5);
    printf("mapping sees write: %.8s\n", a + 2 * PG + 5);
    memcpy(b + 100, "stored", 6);
    char buf[16] = {0};
    pread(fd, buf, 6, 100);
    printf("pread sees store: %s\n", buf);
    lseek(fd, 100, SEEK_SET);
    memset(buf, 0, sizeof buf);
    read(fd, buf, 6);
    printf("read sees store: %s\n", buf);
    /* write(2) from a buffer that is itself the mapping. */
    pwrite(fd, a + PG + 10, 9, 3 * PG - 9);
    printf("self copy: %.9s\n", b + 3 * PG - 9);
    struct stat st;
    fstat(fd, &st);
    printf("size %ld\n", (long)st.st_size);
    munmap(a, 3 * PG);
    printf("b after unmapping a: %s\n", b + PG + 10);
    munmap(b, 3 * PG);
    close(fd);
    fd = open(at("pair"), O_RDONLY);
    memset(buf, 0, sizeof buf);
    pread(fd, buf, 9, PG + 10);
    printf("reopened: %s\n", buf);
    close(fd);
    unlink(at("pair"));
    return 0;
}

static int truncate_test(void) {
    int fd = make(at("trunc"), 4 * PG);
    char *m = mmap(0, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    for (int i = 0; i < 4; i++) memset(m + i * PG, 'a' + i, PG);
    show("full", m, 4);
    ftruncate(fd, PG + PG / 2);
    show("down", m, 4);
    printf("store past end: %d\n", poke(m + 3 * PG, 'x'));
    ftruncate(fd, 4 * PG);
    show("up", m, 4);
    m[3 * PG] = 'z';
    char c = 0;
    pread(fd, &c, 1, 3 * PG);
    printf("pread after up: %c\n", c);
    munmap(m, 4 * PG);
    /* A mapping longer than the file: SIGBUS past it until the file grows. */
    ftruncate(fd, PG);
    char *g = mmap(0, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    show("long", g, 4);
    pwrite(fd, "w", 1, 2 * PG + 7);
    show("grown by write", g, 4);
    printf("byte: %c\n", g[2 * PG + 7]);
    munmap(g, 4 * PG);
    close(fd);
    unlink(at("trunc"));
    return 0;
}

static int protect(void) {
    int fd = make(at("prot"), 2 * PG);
    char *m = mmap(0, 2 * PG, PROT_READ, MAP_SHARED, fd, 0);
    printf("store before: %d\n", poke(m, 'x'));
    printf("mprotect rw (O_RDWR): %d\n", mprotect(m, 2 * PG, PROT_READ | PROT_WRITE));
    printf("store after: %d\n", poke(m, 'q'));
    char c = 0;
    pread(fd, &c, 1, 0);
    printf("pread: %c\n", c);
    close(fd);
    fd = open(at("prot"), O_RDONLY);
    char *r = mmap(0, 2 * PG, PROT_READ, MAP_SHARED, fd, 0);
    int rc = mprotect(r, 2 * PG, PROT_READ | PROT_WRITE);
    printf("mprotect rw (O_RDONLY): %d %s\n", rc, rc ? strerror(errno) : "");
    printf("rw shared mmap of O_RDONLY: %s\n",
           mmap(0, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED
               ? strerror(errno) : "ok");
    printf("sees q: %c\n", r[0]);
    char *p = mmap(0, 2 * PG, PROT_READ, MAP_PRIVATE, fd, 0);
    printf("private mprotect rw (O_RDONLY): %d\n",
           mprotect(p, 2 * PG, PROT_READ | PROT_WRITE));
    p[0] = 'p';
    printf("private store stays private: %c %c\n", p[0], r[0]);
    close(fd);
    unlink(at("prot"));
    return 0;
}

static int unlinked(void) {
    int fd = make(at("gone"), 2 * PG);
    char *m = mmap(0, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *n = mmap(0, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    strcpy(m + PG, "kept");
    unlink(at("gone"));
    close(fd);
    printf("after unlink and close: %s\n", n + PG);
    strcpy(n + 5, "still shared");
    printf("m sees: %s\n", m + 5);
    munmap(m, 2 * PG);
    printf("n alone: %s %s\n", n + 5, n + PG);
    printf("exists: %d\n", access(at("gone"), F_OK) == 0);
    munmap(n, 2 * PG);
    return 0;
}

static int private_copy(void) {
    int fd = make(at("priv"), 2 * PG);
    pwrite(fd, "original", 8, 0);
    pwrite(fd, "second", 6, PG);
    char *s = mmap(0, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *p = mmap(0, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    memcpy(p, "PRIVATE!", 8);
    char buf[9] = {0};
    pread(fd, buf, 8, 0);
    printf("file after private store: %s, shared sees %.8s\n", buf, s);
    pwrite(fd, "changed!", 8, 0);
    memcpy(s + 8, "++", 2);
    printf("private page keeps its copy: %.8s %d\n", p, p[8]);
    printf("shared sees the change: %.10s\n", s);
    close(fd);
    unlink(at("priv"));
    return 0;
}

static int stale(void) {
    int fd = make(at("stale"), 2 * PG);
    char *keep = mmap(0, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *m = mmap(0, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    m[0] = 'a';
    m[PG] = 'b';
    munmap(m, PG);
    printf("unmapped page: %d, kept page: %d\n", probe(m), probe(m + PG));
    mprotect(m + PG, PG, PROT_READ);
    printf("store to read-only page: %d, read: %d\n", poke(m + PG, 'c'), probe(m + PG));
    ftruncate(fd, PG);
    printf("page cut from the file: %d %d\n", probe(keep + PG), probe(m + PG));
    printf("other mapping: %c\n", keep[0]);
    close(fd);
    unlink(at("stale"));
    return 0;
}

static volatile int racing;
static volatile char *raced;

static void *store_in_a_loop(void *arg) {
    unsigned long n = 0;
    for (; racing; n++) raced[n % PG] = (char)n;
    return (void *)n;
}

/* One thread stores through a mapping while another maps and unmaps the
   same page again and again. */
static int race(void) {
    int fd = make(at("race"), PG);
    raced = mmap(0, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    racing = 1;
    pthread_t thread;
    pthread_create(&thread, 0, store_in_a_loop, 0);
    for (int i = 0; i < 2000; i++) {
        char *p = mmap(0, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        p[0] = 1;
        munmap(p, PG);
    }
    racing = 0;
    void *stores;
    pthread_join(thread, &stores);
    printf("stores made: %d\n", stores != 0);
    close(fd);
    unlink(at("race"));
    return 0;
}

static long memfree(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[128];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemFree: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

static int leak(void) {
    long before = memfree();
    for (int i = 0; i < 200; i++) {
        int fd = make(at("leak"), 64 * 1024);
        char *m = mmap(0, 64 * 1024, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            printf("mmap %d failed: %s\n", i, strerror(errno));
            return 1;
        }
        m[i] = (char)i;
        switch (i % 3) {
        case 0: /* unmap, close, unlink */
            munmap(m, 64 * 1024); close(fd); unlink(at("leak")); break;
        case 1: /* unlink and close while mapped: the unmap frees */
            unlink(at("leak")); close(fd); munmap(m, 64 * 1024); break;
        default: /* unlink while mapped and open */
            unlink(at("leak")); munmap(m, 64 * 1024); close(fd); break;
        }
    }
    long after = memfree();
    printf("memfree drop kB: %ld\n", before - after);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGBUS, on_fault);
    signal(SIGSEGV, on_fault);
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc != 3) {
        fprintf(stderr, "usage: %s TEST DIRECTORY\n", argv[0]);
        return 2;
    }
    const char *what = argv[1];
    dir = argv[2];
    if (!strcmp(what, "pair")) return pair();
    if (!strcmp(what, "truncate")) return truncate_test();
    if (!strcmp(what, "protect")) return protect();
    if (!strcmp(what, "unlinked")) return unlinked();
    if (!strcmp(what, "private")) return private_copy();
    if (!strcmp(what, "leak")) return leak();
    if (!strcmp(what, "stale")) return stale();
    if (!strcmp(what, "race")) return race();
    fprintf(stderr, "unknown test %s\n", what);
    return 2;
}
"""

WAL_SQL = """PRAGMA journal_mode=WAL;
CREATE TABLE t(id INTEGER PRIMARY KEY, g INTEGER, name TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<2000)
INSERT INTO t(g, name) SELECT x % 5, 'row' || x FROM c;
BEGIN;
UPDATE t SET name = upper(name) WHERE g = 3;
DELETE FROM t WHERE g = 4;
COMMIT;
ATTACH '{db}' AS again;
SELECT count(*) FROM again.t;
INSERT INTO again.t(g, name) VALUES (9, 'second connection');
SELECT g, count(*), min(name), max(name) FROM t GROUP BY g;
PRAGMA wal_checkpoint;
PRAGMA journal_mode;
SELECT count(*) FROM t;
"""

PY_MMAP = """import mmap
import os
import sys

path = sys.argv[1]
with open(path, "wb") as f:
    f.write(b"-" * 8192)
with open(path, "r+b") as f:
    shared = mmap.mmap(f.fileno(), 0)
    shared[0:5] = b"hello"
    shared[4096:4101] = b"world"
    shared.flush()
    f.seek(0)
    print("read after store:", f.read(5))
    reader = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    copy = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    copy[0:4] = b"mine"
    f.seek(4096)
    f.write(b"WORLD")
    f.flush()
    print("maps see write:", shared[4096:4101], reader[4096:4101])
    print("copy is private:", copy[0:5], shared[0:5])
    shared.resize(3 * 4096)
    shared[8192:8197] = b"third"
    print("size after resize:", os.fstat(f.fileno()).st_size, shared.size())
    print("found at:", shared.find(b"third"), reader.find(b"WORLD"))
    for m in (shared, reader, copy):
        m.close()
with open(path, "rb") as f:
    data = f.read()
print("file:", len(data), data[:5], data[4096:4101], data[8192:8197])
os.unlink(path)
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The C program, and an image holding it, python3, its library and sqlite3.

    Scripts for the VM name their files below the guest's /tmp.
    """
    work = tmp_path_factory.mktemp("shared")
    source = work / "shm.c"
    source.write_text(PROGRAM)
    program = work / "shm"
    subprocess.run(
        ["gcc", "-O1", "-static", "-pthread", "-o", program, source], check=True
    )
    (work / "wal.sql").write_text(WAL_SQL.format(db="/tmp/wal.db"))
    (work / "py_mmap.py").write_text(PY_MMAP)
    manifest = work / "stdlib.manifest"
    with open(manifest, "w") as out:
        for directory, subdirs, files in os.walk(STDLIB):
            subdirs[:] = [d for d in subdirs if d not in ("test", "idlelib")]
            for name in files:
                host = os.path.join(directory, name)
                out.write(f"{host}: {host}\n")
    # /etc/passwd gives sqlite3 the home directory it finds natively.
    hosts = [program, work / "wal.sql", work / "py_mmap.py", PYTHON, "/etc/passwd"]
    if SQLITE:
        hosts.append(SQLITE)
    image = work / "shared.img"
    args = [arg for host in hosts for arg in ("--from-host", str(host))]
    made = osv("build", "--fs", "ramfs", "--format", "raw", "-o", str(image), *args,
               "--manifest", str(manifest), "--cmdline", "/bin/true")  # fmt: skip
    assert made.returncode == 0, made.stderr
    return program, image


def in_vm(image: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    cmdline = " ".join(f'"{word}"' for word in argv)
    return osv("run", "-m", "256M", str(image), "-e", cmdline)


def assert_same(vm, expected) -> None:  # noqa: ANN001
    assert vm.returncode == expected.returncode, vm.stdout + vm.stderr
    assert program_output(vm.stdout) == expected.stdout
    assert vm.stderr == expected.stderr


@needs_kvm
@pytest.mark.parametrize(
    "test", ["pair", "truncate", "protect", "unlinked", "private", "stale", "race"]
)
def test_shared_file_mappings_behave_as_natively(built, tmp_path, test):
    program, image = built
    expected = native([str(program), test, str(tmp_path)])
    assert expected.returncode == 0, expected.stderr
    assert_same(in_vm(image, [str(program), test, "/tmp"]), expected)


@needs_kvm
def test_mapping_and_deleting_files_in_a_loop_keeps_memory_free(built):
    program, image = built
    vm = in_vm(image, [str(program), "leak", "/tmp"])
    assert vm.returncode == 0, vm.stdout + vm.stderr
    # 200 files of a 2 MiB chunk each would take 400 MiB if kept; a little
    # slack covers page tables and the like.
    dropped = int(program_output(vm.stdout).split(":")[1])
    assert dropped <= 64


@needs_kvm
@pytest.mark.skipif(SQLITE is None, reason="sqlite3 is not installed")
def test_sqlite3_in_wal_mode_matches_native(built, tmp_path):
    _, image = built
    script = tmp_path / "wal.sql"
    script.write_text(WAL_SQL.format(db=tmp_path / "wal.db"))
    expected = native([SQLITE, str(tmp_path / "wal.db"), f".read {script}"])
    assert "wal\n" in expected.stdout
    vm = in_vm(image, [SQLITE, "/tmp/wal.db", f".read {image.parent}/wal.sql"])
    assert_same(vm, expected)


@needs_kvm
def test_python_mmap_module_matches_native(built, tmp_path):
    _, image = built
    expected = native([PYTHON, str(image.parent / "py_mmap.py"), str(tmp_path / "m")])
    assert expected.returncode == 0, expected.stderr
    vm = in_vm(image, [PYTHON, f"{image.parent}/py_mmap.py", "/tmp/m.bin"])
    assert_same(vm, expected)
