"""mmap of ROFS files, which share the pages of ROFS's cache, against native Linux."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/kvm"), reason="these tests boot VMs and need /dev/kvm"
)

# Maps a file several ways and prints what a program can observe: contents,
# isolation of private copies, refused upgrades, faults after munmap, and
# the /proc/self/maps line count of a large mapping.
MAPPER = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t checksum(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static int maps_lines(const char *path) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, path)) n++;
    fclose(f);
    return n;
}

int main(int argc, char **argv) {
    const char *path = argv[1];
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) { perror(path); return 1; }
    size_t size = st.st_size;
    unsigned char *copy = malloc(size);
    size_t got = 0;
    while (got < size) got += read(fd, copy + got, size - got);

    unsigned char *a = mmap(0, size, PROT_READ, MAP_PRIVATE, fd, 0);
    unsigned char *b = mmap(0, size, PROT_READ, MAP_SHARED, fd, 0);
    if (a == MAP_FAILED || b == MAP_FAILED) { perror("mmap"); return 1; }
    printf("same as read: %d %d\n", !memcmp(a, copy, size), !memcmp(b, copy, size));
    printf("checksum %016llx\n", (unsigned long long)checksum(a, size));
    printf("maps lines: %d\n", maps_lines(path));

    /* Past the end of the file, the last page reads as zeros. */
    size_t tail = (size + 4095) / 4096 * 4096 - size;
    int zeros = 1;
    for (size_t i = 0; i < tail; i++) zeros &= a[size + i] == 0;
    printf("tail zeros: %d\n", zeros);

    /* An offset mapping of the middle of the file. */
    off_t off = 3 << 20;
    unsigned char *c = mmap(0, 1 << 20, PROT_READ, MAP_PRIVATE, fd, off);
    printf("offset mapping: %d\n", c != MAP_FAILED && !memcmp(c, copy + off, 1 << 20));

    /* A private mapping made writable is a copy: the file and the other
       mappings keep their bytes. */
    if (mprotect(a, 8192, PROT_READ | PROT_WRITE)) { perror("mprotect"); return 1; }
    memset(a, 0xAB, 8192);
    unsigned char first[16];
    pread(fd, first, sizeof first, 0);
    printf("private write kept private: %d %d %d\n", a[0] == 0xAB,
           b[0] == copy[0], first[0] == copy[0]);
    printf("rest of private mapping: %d\n", !memcmp(a + 8192, copy + 8192, size - 8192));

    /* A shared mapping of a read-only descriptor cannot become writable. */
    int rc = mprotect(b, 4096, PROT_READ | PROT_WRITE);
    printf("shared upgrade: %d %s\n", rc, rc ? strerror(errno) : "");

    /* A writable private mapping from the start gets its own pages too. */
    unsigned char *d = mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    d[100] ^= 0xFF;
    printf("writable private: %d %d\n", d[100] == (copy[100] ^ 0xFF), b[100] == copy[100]);

    /* Unmapping part of a shared-cache mapping removes exactly that part. */
    munmap(b + (2 << 20), 4096);
    printf("after partial munmap: %d %d\n", b[(2 << 20) - 1] == copy[(2 << 20) - 1],
           b[(2 << 20) + 4096] == copy[(2 << 20) + 4096]);
    fflush(stdout);
    /* Touching the hole must fault, as on Linux. */
    volatile unsigned char x = b[(2 << 20) + 5];
    (void)x;
    printf("not reached\n");
    return 0;
}
"""


def osv(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "osv"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "osv"]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def mapper(tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("rofs-mmap")
    source = work / "mapper.c"
    source.write_text(MAPPER)
    program = work / "mapper"
    subprocess.run(["gcc", "-O1", "-static", "-o", program, source], check=True)
    # 9 MiB and a bit: several 2 MiB cache chunks and a partial last page.
    data = work / "data.bin"
    data.write_bytes(os.urandom((9 << 20) + 1234))
    return program, data


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_rofs_mappings_behave_as_on_linux(mapper, tmp_path, fmt):
    program, data = mapper
    native = subprocess.run(
        [str(program), str(data)], capture_output=True, text=True, timeout=60
    )
    assert native.returncode == -11, native.stderr  # SIGSEGV at the end
    image = tmp_path / f"mapper.{fmt}"
    built = osv(
        "build", "-o", str(image), "--fs", "rofs", "--format", fmt,
        "--from-host", str(program), "--from-host", str(data),
        "--cmdline", f"{program} {data}",
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    result = osv("run", str(image))
    assert result.returncode != 0
    output = result.stdout[
        result.stdout.index("\n", result.stdout.index("Cmdline:")) + 1 :
    ]
    # The program's own lines come first; the fault report follows them.
    lines = output.splitlines()
    assert lines[: len(native.stdout.splitlines())] == native.stdout.splitlines()
    assert "not reached" not in output
    assert "page fault" in (result.stdout + result.stderr).lower()
