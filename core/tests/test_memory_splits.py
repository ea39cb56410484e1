"""munmap, mprotect and MAP_FIXED on the middle of a mapping, against native Linux."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/kvm"), reason="boots VMs: needs /dev/kvm"
)

# Maps 16 pages (anonymous or of a file), changes page 3 only, then probes
# every page, catching faults with a SIGSEGV handler.
PROBE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static sigjmp_buf jump;
static void on_fault(int sig) { siglongjmp(jump, 1); }
static int probe(char *p) {
    if (sigsetjmp(jump, 1)) return -1;
    return *(volatile char *)p;
}

int main(int argc, char **argv) {
    signal(SIGSEGV, on_fault);
    const char *what = argv[1];
    long pg = 4096;
    char *c;
    if (argc > 2) {
        int fd = open(argv[2], O_RDONLY);
        c = mmap(0, 16 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    } else {
        c = mmap(0, 16 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
        for (int i = 0; i < 16; i++) c[i * pg] = i + 1;
    }
    char *middle = c + 3 * pg;
    if (!strcmp(what, "munmap")) munmap(middle, pg);
    if (!strcmp(what, "mprotect")) mprotect(middle, pg, PROT_NONE);
    if (!strcmp(what, "restore")) {
        mprotect(middle, pg, PROT_NONE);
        mprotect(middle, pg, PROT_READ | PROT_WRITE);
    }
    if (!strcmp(what, "readonly")) mprotect(middle, 2 * pg, PROT_READ);
    if (!strcmp(what, "pkey")) {
        /* Key -1 is plain mprotect; a key never allocated is refused. */
        syscall(SYS_pkey_mprotect, middle, 2 * pg, PROT_READ, -1);
        long refused = syscall(SYS_pkey_mprotect, middle, pg, PROT_NONE, 5);
        printf("key 5: %ld %s ", refused, refused ? strerror(errno) : "");
    }
    if (!strcmp(what, "shrink")) {
        /* Shrinking in place may cross the split the mprotect made. */
        mprotect(middle, pg, PROT_READ);
        printf("shrunk %d ", mremap(c, 16 * pg, 2 * pg, 0) == c);
    }
    if (!strcmp(what, "fixed"))
        mmap(middle, pg, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    for (int i = 0; i < 16; i++) printf("%d:%d ", i, probe(c + i * pg));
    printf("\n");
    return 0;
}
"""


PAGES = b"".join(bytes([i + 1]) * 4096 for i in range(16))


def _workbench(
    work: Path, name: str, source: str, content: bytes = PAGES
) -> tuple[Path, Path, Path]:
    """Compile ``source``, write ``content`` (by default 16 pages, page i
    holding i + 1) to a data file and build an image with both; return the
    program, the file and the image."""
    source_file = work / f"{name}.c"
    source_file.write_text(source)
    program = work / name
    subprocess.run(["gcc", "-O1", "-static", "-o", program, source_file], check=True)
    data = work / "pages.bin"
    data.write_bytes(content)
    image = work / f"{name}.img"
    built = subprocess.run(
        [sys.executable, "-m", "osv", "build", "--fs", "ramfs", "--format", "raw",
         "-o", str(image), "--from-host", str(program), "--from-host", str(data)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return program, data, image


def _compare(argv: list[str], image: Path, data: Path, content: bytes = PAGES) -> None:
    """Run ``argv`` natively and in the VM; the last lines must agree."""
    native = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert native.returncode == 0, native.stderr
    data.write_bytes(content)  # the native run may have changed it
    ours = subprocess.run(
        [sys.executable, "-m", "osv", "run", "-m", "256M", "-e", " ".join(argv),
         str(image)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert ours.stdout.splitlines()[-1].strip() == native.stdout.strip()


@pytest.fixture(scope="module")
def prober(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return _workbench(tmp_path_factory.mktemp("splits"), "probe", PROBE)


@pytest.mark.parametrize(
    "what", ["munmap", "mprotect", "restore", "readonly", "pkey", "shrink", "fixed"]
)
@pytest.mark.parametrize("backing", ["anonymous", "file"])
def test_changing_one_page_of_a_mapping_changes_only_that_page(prober, what, backing):
    program, data, image = prober
    argv = [str(program), what] + ([str(data)] if backing == "file" else [])
    _compare(argv, image, data)


SPANNING_READ = r"""
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

int main(void) {
    long pg = 4096;
    /* Two mappings side by side: one buffer over both. */
    char *p = mmap(0, 2 * pg, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mmap(p + pg, pg, PROT_READ | PROT_WRITE,
         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    int fds[2];
    pipe(fds);
    memset(p, 'a', pg);
    /* Exactly the first mapping's worth is waiting: read must not wait
       for more, since the write end stays open. */
    write(fds[1], p, pg);
    alarm(5);
    printf("read %zd\n", read(fds[0], p + 0, 2 * pg));
    write(fds[1], "xyz", 3);
    struct iovec iov[2] = {{p, 2}, {p + pg, 10}};
    printf("readv %zd\n", readv(fds[0], iov, 2));
    /* A write from both mappings arrives whole. */
    memset(p, 'b', 2 * pg);
    printf("write %zd\n", write(fds[1], p + pg - 100, 200));
    printf("read back %zd\n", read(fds[0], p, 2 * pg));
    return 0;
}
"""


def test_reads_and_writes_of_a_pipe_spanning_two_mappings_act_as_one(tmp_path):
    source = tmp_path / "span.c"
    source.write_text(SPANNING_READ)
    program = tmp_path / "span"
    subprocess.run(["gcc", "-O1", "-static", "-o", program, source], check=True)
    native = subprocess.run([str(program)], capture_output=True, text=True, timeout=60)
    assert native.returncode == 0, native.stderr
    image = tmp_path / "span.img"
    built = subprocess.run(
        [sys.executable, "-m", "osv", "build", "--fs", "ramfs", "--format", "raw",
         "-o", str(image), "--from-host", str(program)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    ours = subprocess.run(
        [sys.executable, "-m", "osv", "run", "-m", "256M", str(image)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert ours.stdout.splitlines()[-4:] == native.stdout.splitlines()


FILE_MAPPING = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static sigjmp_buf jump;
static int last;
static void on_fault(int sig) { last = sig; siglongjmp(jump, 1); }
static int probe(char *p) {
    if (sigsetjmp(jump, 1)) return -last;
    return *(volatile unsigned char *)p;
}

int main(int argc, char **argv) {
    signal(SIGSEGV, on_fault);
    signal(SIGBUS, on_fault);
    long pg = 4096;
    int fd = open(argv[1], O_RDONLY);
    off_t size = lseek(fd, 0, SEEK_END);
    unsigned char first;
    pread(fd, &first, 1, 0);
    /* A written private page reads the file again after MADV_DONTNEED. */
    char *p = mmap(0, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    p[0] = first ^ 0xff;
    int rc = madvise(p, pg, MADV_DONTNEED);
    printf("madvise %d, %s\n", rc,
           (unsigned char)p[0] == first ? "file bytes again" : "still written");
    /* Anonymous memory reads zeros again. */
    char *a = mmap(0, 3 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    memset(a, 7, 3 * pg);
    madvise(a + pg, pg, MADV_DONTNEED);
    printf("anonymous: %d %d %d\n", a[0], a[pg], a[2 * pg]);
    /* The rest of the last page reads zeros; whole pages past it: SIGBUS. */
    long pages = (size + pg - 1) / pg;
    char *e = mmap(0, (pages + 2) * pg, PROT_READ, MAP_PRIVATE, fd, 0);
    int at_end = probe(e + size), next = probe(e + pages * pg);
    int last_page = probe(e + (pages + 1) * pg);
    printf("end of file %d, next page %d, last page %d\n", at_end, next, last_page);
    /* A read(2) into such a page fails with EFAULT. */
    int fds[2];
    pipe(fds);
    write(fds[1], "x", 1);
    ssize_t got = read(fds[0], e + pages * pg, 1);
    printf("read into it: %zd %s\n", got, strerror(errno));
    /* Writable and shared needs a descriptor open for writing. */
    void *w = mmap(0, pg, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    printf("shared writable: %s\n", w == MAP_FAILED ? strerror(errno) : "mapped");
    return 0;
}
"""


def test_file_mappings_zero_fill_fault_and_discard_as_on_linux(tmp_path):
    source = tmp_path / "fmap.c"
    source.write_text(FILE_MAPPING)
    program = tmp_path / "fmap"
    subprocess.run(["gcc", "-O1", "-static", "-o", program, source], check=True)
    data = tmp_path / "data.txt"
    data.write_bytes(b"hello world\n" * 500)
    native = subprocess.run(
        [str(program), str(data)], capture_output=True, text=True, timeout=60
    )
    assert native.returncode == 0, native.stderr
    assert "file bytes again" in native.stdout and "next page -7" in native.stdout
    image = tmp_path / "fmap.img"
    built = subprocess.run(
        [sys.executable, "-m", "osv", "build", "--fs", "ramfs", "--format", "raw",
         "-o", str(image), "--from-host", str(program), "--from-host", str(data)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    ours = subprocess.run(
        [sys.executable, "-m", "osv", "run", "-m", "256M", "-e",
         f"{program} {data}", str(image)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert ours.returncode == 0, ours.stdout + ours.stderr
    lines = native.stdout.splitlines()
    assert ours.stdout.splitlines()[-len(lines) :] == lines


# A dynamic linker's pattern: a private read-only mapping of a whole file,
# then a fixed mapping over part of it from the same place of the file. The
# kernel may serve the second from the pages of the first; what the program
# sees must not show it.
OVERLAY = r"""
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static sigjmp_buf jump;
static void on_fault(int sig) { siglongjmp(jump, 1); }
static int poke(char *p) {
    if (sigsetjmp(jump, 1)) return -1;
    *(volatile char *)p = 'w';
    return 1;
}

int main(int argc, char **argv) {
    signal(SIGSEGV, on_fault);
    const char *what = argv[1];
    long pg = 4096;
    int fd = open(argv[2], O_RDWR);
    char *c = mmap(0, 16 * pg, PROT_READ, MAP_PRIVATE, fd, 0);
    long offset = strcmp(what, "shifted") ? 4 * pg : 9 * pg;
    if (!strcmp(what, "changed")) pwrite(fd, "Z", 1, 5 * pg);
    char renamed[4096];
    snprintf(renamed, sizeof renamed, "%s.new", argv[2]);
    if (!strcmp(what, "renamed")) rename(argv[2], renamed);
    if (!strcmp(what, "removed")) unlink(argv[2]);
    int prot = strcmp(what, "readonly") ? PROT_READ | PROT_WRITE : PROT_READ;
    mmap(c + 4 * pg, 4 * pg, prot, MAP_PRIVATE | MAP_FIXED, fd, offset);
    /* Both mappings' lines name the file as it is called now. */
    for (int page = 0; page < 8; page += 4) {
        char line[4096], *name = "-";
        unsigned long from, to, at = (unsigned long)(c + page * pg);
        FILE *maps = fopen("/proc/self/maps", "r");
        while (fgets(line, sizeof line, maps))
            if (sscanf(line, "%lx-%lx", &from, &to) == 2 && from <= at && at < to
                && strrchr(line, '/'))
                name = strdup(strrchr(line, '/') + 1);
        fclose(maps);
        name[strcspn(name, "\n")] = 0;
        printf("page %d named %s, ", page, name);
    }
    printf("page 5 %d, ", c[5 * pg]);
    printf("poke %d %d ", poke(c + 3 * pg), poke(c + 5 * pg));
    if (!strcmp(what, "written"))
        mmap(c + 4 * pg, 4 * pg, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 4 * pg);
    for (int i = 0; i < 16; i++) printf("%d:%d ", i, c[i * pg]);
    char byte;
    pread(fd, &byte, 1, 5 * pg);
    printf("file %d\n", byte);
    return 0;
}
"""


@pytest.mark.parametrize(
    "what", ["same", "readonly", "shifted", "changed", "written", "renamed", "removed"]
)
# A file of at least 1 MiB is kept in guest frames that mappings borrow; a
# smaller one is copied into each mapping.
@pytest.mark.parametrize("size", [len(PAGES), 2 << 20])
def test_fixed_mapping_over_a_copy_of_its_file_is_a_new_mapping(tmp_path, what, size):
    content = PAGES.ljust(size, b"\0")
    program, data, image = _workbench(tmp_path, "overlay", OVERLAY, content)
    _compare([str(program), what, str(data)], image, data, content)
