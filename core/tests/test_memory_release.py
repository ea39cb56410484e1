"""A VM gives its memory back to the host when it stops."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from guest import osv

BUSYBOX = shutil.which("busybox")

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists("/dev/kvm"), reason="these tests boot VMs and need /dev/kvm"
    ),
    pytest.mark.skipif(BUSYBOX is None, reason="needs a static busybox"),
]

# Boots a 1 GiB guest five times in one process (as reboots do) and prints
# the process's address-space size after each, in KiB.
SCRIPT = """
import gc, io, sys
from osv.boot._sequence import BootConfig, Console, boot

def size():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1])

for _ in range(5):
    result = boot(BootConfig(image=sys.argv[1], memory=1 << 30), Console(io.StringIO()))
    assert result.status == 0, result.status
    gc.collect()
    print(size())
"""


def test_repeated_boots_in_one_process_do_not_keep_guest_memory(tmp_path: Path):
    image = tmp_path / "bb.img"
    built = osv("build", "--fs", "ramfs", "-o", str(image), "--from-host", BUSYBOX,
                "--cmdline", f"{BUSYBOX} true")  # fmt: skip
    assert built.returncode == 0, built.stderr

    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(image)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr
    sizes = [int(line) for line in run.stdout.split()]
    # Each boot maps 1 GiB of guest RAM; kept, the process would grow by
    # that much every time.
    assert sizes[-1] - sizes[0] < 256 << 10, sizes
