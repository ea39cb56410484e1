"""Every clock id through clock_gettime and clock_getres, against native Linux."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from guest import native, osv, program_output

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/kvm"), reason="boots VMs: needs /dev/kvm"
)

# Clock ids 0-12 (and one past them): each call's result and errno; for
# clock_getres the resolution too. Clocks the host lacks (the alarm clocks
# without an RTC that can wake) must fail in the VM as they do natively.
CLOCKS = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int main(void) {
    for (int c = 0; c < 14; c++) {
        struct timespec ts, res;
        errno = 0;
        int got = clock_gettime(c, &ts);
        int got_errno = errno;
        errno = 0;
        int has_res = clock_getres(c, &res);
        printf("%d: %d %s | %d %ld\n", c, got, got ? strerror(got_errno) : "",
               has_res, has_res ? 0L : res.tv_nsec);
    }
    return 0;
}
"""


@pytest.mark.parametrize("variant", [["-static"], []], ids=["static", "dynamic"])
def test_every_clock_id_answers_as_natively(tmp_path: Path, variant: list[str]) -> None:
    source = tmp_path / "clocks.c"
    source.write_text(CLOCKS)
    program = tmp_path / "clocks"
    subprocess.run(["gcc", "-O1", *variant, "-o", program, source], check=True)
    expected = native([str(program)])
    assert expected.returncode == 0
    image = tmp_path / "clocks.img"
    built = osv("build", "--fs", "ramfs", "--format", "raw", "-o", str(image),
                "--from-host", str(program))  # fmt: skip
    assert built.returncode == 0, built.stderr
    ran = osv("run", str(image))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert program_output(ran.stdout) == expected.stdout
