"""Images with OSv's read-only file system, end to end: build, boot, read, convert."""

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
PYTHON = "/usr/bin/python3.11"
PYTHON_LIB = Path("/usr/lib/python3.11")

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/kvm"), reason="these tests boot VMs and need /dev/kvm"
)
qemu_img = shutil.which("qemu-img")
needs_qemu_img = pytest.mark.skipif(
    qemu_img is None, reason="qemu-img is not installed"
)


def osv(*args: str, text: bool = True, timeout: float = 300):
    """Run the installed osv command; created times come from SOURCE_DATE_EPOCH."""
    script = Path(sys.executable).parent / "osv"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "osv"]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=text,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
    )


def program_output(stdout):
    """What the program printed: everything after the kernel's `Cmdline:` line."""
    marker = "Cmdline: " if isinstance(stdout, str) else b"Cmdline: "
    start = stdout.index(marker)
    return stdout[stdout.index("\n" if isinstance(stdout, str) else b"\n", start) + 1 :]


def build(image: Path, *args: str) -> Path:
    built = osv("build", "-o", str(image), *args)
    assert built.returncode == 0, built.stderr
    return image


def boot(image: Path, *args: str) -> str:
    result = osv("run", str(image), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return program_output(result.stdout)


def qemu_check(image: Path) -> None:
    check = subprocess.run(
        [qemu_img, "check", str(image)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No errors were found on the image." in check.stdout


@pytest.fixture(scope="module")
def busybox_image(tmp_path_factory) -> Path:
    """The default image: rofs in a qcow2 container, busybox and os-release."""
    image = tmp_path_factory.mktemp("rofs") / "busybox.qcow2"
    return build(
        image, "--from-host", BUSYBOX, "--from-host", "/etc/os-release",
        "--cmdline", BUSYBOX,
    )  # fmt: skip


# ---------------------------------------------------------------------------
# The default image: rofs in qcow2
# ---------------------------------------------------------------------------


@needs_qemu_img
def test_the_default_image_is_rofs_in_a_clean_qcow2(busybox_image):
    info = json.loads(
        subprocess.run(
            [qemu_img, "info", "--output=json", str(busybox_image)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert info["format"] == "qcow2"
    qemu_check(busybox_image)

    described = osv("image", "info", str(busybox_image)).stdout.splitlines()
    from importlib.metadata import version

    rofs = version("osv-mod-rofs")
    assert "format: qcow2" in described
    assert "file system: rofs" in described
    assert f"  rofs {rofs} (installed: {rofs})" in described
    assert osv("image", "getargs", str(busybox_image)).stdout == (
        f"--rootfs=rofs {BUSYBOX}\n"
    )


def test_a_program_reads_its_files_from_rofs(busybox_image):
    output = boot(busybox_image, "-e", f"--rootfs=rofs {BUSYBOX} cat /etc/os-release")

    assert output == Path("/etc/os-release").read_text()


def test_the_bootchart_has_the_rofs_stage(busybox_image):
    result = osv("run", "--bootchart", str(busybox_image))

    stages = [line.split(":")[0].strip() for line in result.stdout.splitlines()]
    assert stages.index("VFS initialized") < stages.index("ROFS mounted")
    assert stages.index("ROFS mounted") < stages.index("Total time")


def test_without_rootfs_the_boot_discovers_rofs(busybox_image):
    output = boot(busybox_image, "-e", f"{BUSYBOX} cat /proc/mounts")

    assert "/dev/vblk0.1 / rofs ro 0 0\n" in output
    assert "none /dev devfs rw 0 0\n" in output
    assert "none /tmp ramfs rw 0 0\n" in output


def test_nopivot_leaves_rofs_at_rofs_and_the_boot_ramfs_at_root(busybox_image):
    output = boot(
        busybox_image,
        "-e",
        f"--rootfs=rofs --nopivot /rofs{BUSYBOX} cat /rofs/etc/os-release /proc/mounts",
    )

    assert output.startswith(Path("/etc/os-release").read_text())
    assert "/dev/vblk0.1 /rofs rofs ro 0 0\n" in output


def test_rofs_refuses_writes_and_tmp_is_writable(busybox_image):
    result = osv(
        "run",
        str(busybox_image),
        "-e",
        f"{BUSYBOX} touch /new; {BUSYBOX} touch /tmp/new; {BUSYBOX} ls /tmp",
    )

    assert "touch: /new: Read-only file system" in result.stderr
    assert program_output(result.stdout) == "new\n"


def test_files_the_image_holds_under_tmp_stay_visible_and_become_writable(tmp_path):
    # A program and its data below /tmp, as building from a scratch directory
    # there gives: /tmp is still a writable ramfs, starting as their copy.
    program = tmp_path / "busybox"
    shutil.copy(BUSYBOX, program)
    data = tmp_path / "data"
    data.mkdir()
    (data / "nums.txt").write_text("3\n1\n2\n")
    (data / "link").symlink_to("nums.txt")
    image = build(
        tmp_path / "tmp.qcow2", "--from-host", str(program), "--from-host", str(data),
        "--cmdline", str(program),
    )  # fmt: skip
    script = (
        f"{program} sort -o {data}/sorted {data}/link; {program} cat {data}/sorted; "
        f'{program} sh -c "echo 4 >> {data}/nums.txt"; {program} cat {data}/nums.txt; '
        f"{program} rm {data}/sorted; {program} ls {data}; "
        f"{program} grep -c tmp /proc/mounts"
    )
    output = boot(image, "-e", script)
    assert output.splitlines() == [
        "1",
        "2",
        "3",
        "3",
        "1",
        "2",
        "4",
        "link",
        "nums.txt",
        "1",
    ]


def test_statfs_in_the_guest_is_what_osv_reports(busybox_image):
    output = boot(busybox_image, "-e", f'{BUSYBOX} stat -f -c "%S %f %a %c %d %l" /')

    block_size, free, available, inodes, free_inodes, namelen = output.split()
    assert (block_size, free, available, free_inodes, namelen) == (
        "512",
        "0",
        "0",
        "0",
        "0",
    )
    # The root, the skeleton (dev, proc, tmp, etc, mnttab), usr, bin,
    # busybox and os-release.
    assert inodes == "10"


def test_the_rofs_cache_can_be_turned_off(busybox_image):
    output = boot(
        busybox_image,
        "-e",
        f"--rootfs=rofs --disable_rofs_cache {BUSYBOX} sha256sum /etc/os-release",
    )

    expected = hashlib.sha256(Path("/etc/os-release").read_bytes()).hexdigest()
    assert output.split()[0] == expected


def test_the_cache_figures_are_logged_when_rofs_is_unmounted(busybox_image):
    result = osv("-v", "run", str(busybox_image), "-e", f"{BUSYBOX} true")

    assert result.returncode == 0, result.stderr
    (figures,) = [
        line for line in result.stderr.splitlines() if "rofs /dev/vblk0.1:" in line
    ]
    size = os.path.getsize(BUSYBOX)
    assert f"{-(-size // 512)} blocks read" in figures
    assert "cache hit ratio" in figures


def test_a_damaged_rofs_stops_the_boot_with_one_clear_line(tmp_path):
    image = build(tmp_path / "a.img", "--format", "raw", "--from-host", BUSYBOX)
    with open(image, "r+b") as file:
        file.seek(2 * 1024 * 1024)
        file.write(b"\xef\xbe\xad\xde")

    result = osv("run", str(image))

    assert result.returncode == 1
    assert result.stderr == (
        "osv: error: cannot mount the rofs root file system from /dev/vblk0.1: "
        "vblk0.1: no ROFS here (magic 0xdeadbeef, expected 0xdeadbead)\n"
    )


# ---------------------------------------------------------------------------
# qemu-img as the oracle
# ---------------------------------------------------------------------------


@needs_qemu_img
def test_qemu_img_converts_our_qcow2_to_exactly_our_raw_image(tmp_path):
    inputs = ["--from-host", BUSYBOX, "--from-host", "/etc/os-release"]
    inputs += ["--cmdline", BUSYBOX]
    ours_qcow2 = build(tmp_path / "a.qcow2", *inputs)
    ours_raw = build(tmp_path / "a.raw", "--format", "raw", *inputs)
    theirs = tmp_path / "qemu.raw"

    subprocess.run(
        [qemu_img, "convert", "-O", "raw", str(ours_qcow2), str(theirs)], check=True
    )
    converted = tmp_path / "osv.raw"
    assert (
        osv(
            "image", "convert", str(ours_qcow2), "--to", "raw", "-o", str(converted)
        ).returncode
        == 0
    )

    assert theirs.read_bytes() == ours_raw.read_bytes()
    assert converted.read_bytes() == ours_raw.read_bytes()


@needs_qemu_img
@pytest.mark.parametrize(
    "options", [[], ["-c"], ["-o", "compat=0.10"]], ids=["v3", "compressed", "v2"]
)
def test_an_image_qemu_img_converted_to_qcow2_boots(tmp_path, options):
    raw = build(
        tmp_path / "a.raw", "--format", "raw", "--from-host", BUSYBOX,
        "--from-host", "/etc/os-release", "--cmdline", BUSYBOX,
    )  # fmt: skip
    qcow2 = tmp_path / "b.qcow2"
    subprocess.run(
        [qemu_img, "convert", "-O", "qcow2", *options, str(raw), str(qcow2)], check=True
    )

    output = boot(qcow2, "-e", f"{BUSYBOX} cat /etc/os-release")

    assert output == Path("/etc/os-release").read_text()


@needs_qemu_img
def test_setargs_on_a_qcow2_image_keeps_it_clean_and_boots(busybox_image, tmp_path):
    image = tmp_path / "copy.qcow2"
    shutil.copyfile(busybox_image, image)

    assert (
        osv("image", "setargs", str(image), f"{BUSYBOX} echo changed").returncode == 0
    )

    qemu_check(image)
    assert boot(image) == "changed\n"


# ---------------------------------------------------------------------------
# osv mkfs
# ---------------------------------------------------------------------------


def test_osv_mkfs_writes_the_documented_worked_example(tmp_path):
    (tmp_path / "hello").write_bytes(b"H" * 100)
    (tmp_path / "hosts").write_bytes(b"h" * 600)
    manifest = tmp_path / "usr.manifest"
    manifest.write_text("/hello: hello\n/etc/hosts: hosts\n/lib: ->/usr/lib\n")
    out = tmp_path / "rofs.img"

    result = osv("mkfs", "--fs", "rofs", "-o", str(out), "--manifest", str(manifest))

    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    assert len(data) == 2560
    assert struct.unpack_from("<8Q", data) == (0xDEADBEAD, 1, 512, 4, 1, 4, 1, 5)
    assert data[512:612] == b"H" * 100 and data[1024:1624] == b"h" * 600
    assert data[2048 + 56 : 2048 + 66] == b"\x08\x00/usr/lib"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".osv")] == []


def test_osv_mkfs_of_a_directory_is_its_sorted_manifest(tmp_path):
    tree = tmp_path / "tree"
    (tree / "b" / "c").mkdir(parents=True)
    (tree / "a").write_bytes(b"A" * 700)
    (tree / "b" / "c" / "d").write_bytes(b"D")
    (tree / "b" / "empty").mkdir()
    (tree / "b" / "link").symlink_to("c/d")
    manifest = tmp_path / "m"
    manifest.write_text(
        f"/a: {tree}/a\n/b: {tree}/b\n/b/c: {tree}/b/c\n/b/c/d: {tree}/b/c/d\n"
        f"/b/empty: {tree}/b/empty\n/b/link: ->c/d\n"
    )

    from_dir = osv("mkfs", "-o", str(tmp_path / "dir.rofs"), str(tree))
    from_manifest = osv(
        "mkfs", "-o", str(tmp_path / "m.rofs"), "--manifest", str(manifest)
    )

    assert from_dir.returncode == from_manifest.returncode == 0, from_dir.stderr
    assert (tmp_path / "dir.rofs").read_bytes() == (tmp_path / "m.rofs").read_bytes()


def test_osv_mkfs_errors_are_one_line(tmp_path):
    result = osv("mkfs", "-o", str(tmp_path / "x"), str(tmp_path / "missing"))

    assert result.returncode == 1
    assert result.stderr == f"osv: error: {tmp_path / 'missing'} is not a directory\n"
    unknown = osv("mkfs", "--fs", "nofs", "-o", str(tmp_path / "x"), str(tmp_path))
    assert "pip install osv-mod-nofs" in unknown.stderr


# ---------------------------------------------------------------------------
# Real programs and real trees
# ---------------------------------------------------------------------------

MMAP_PROGRAM = r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
/* FNV-1a of a file read through mmap, then through read() in 1 MiB pieces. */
int main(int argc, char **argv) {
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) { perror(argv[1]); return 1; }
    unsigned char *map = mmap(0, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) { perror("mmap"); return 1; }
    unsigned long long h = 1469598103934665603ULL, g = h;
    for (off_t i = 0; i < st.st_size; i++) { h ^= map[i]; h *= 1099511628211ULL; }
    static unsigned char buffer[1 << 20];
    ssize_t n;
    while ((n = read(fd, buffer, sizeof buffer)) > 0)
        for (ssize_t i = 0; i < n; i++) { g ^= buffer[i]; g *= 1099511628211ULL; }
    printf("%llx %llx\n", h, g);
    return 0;
}
"""


def test_mmap_and_read_of_rofs_files_give_the_host_bytes(tmp_path):
    source = tmp_path / "fnv.c"
    source.write_text(MMAP_PROGRAM)
    program = tmp_path / "fnv"
    subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(program), str(source)], check=True
    )
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(3 * 1024 * 1024 + 12345))
    image = build(
        tmp_path / "m.qcow2", "--from-host", str(program), "--from-host", str(data),
        "--cmdline", f"{program} {data}",
    )  # fmt: skip

    native = subprocess.run([str(program), str(data)], capture_output=True, text=True)

    output = boot(image)
    hashes = output.split()
    assert hashes[0] == hashes[1]
    assert output == native.stdout


@pytest.mark.slow
@pytest.mark.skipif(not PYTHON_LIB.is_dir(), reason=f"{PYTHON_LIB} is not here")
def test_the_python_standard_library_reads_back_byte_for_byte(tmp_path):
    image = build(
        tmp_path / "stdlib.qcow2", "--from-host", BUSYBOX, "--from-host",
        str(PYTHON_LIB), "--cmdline", f"{BUSYBOX} tar -cf - {PYTHON_LIB}",
    )  # fmt: skip

    result = osv("run", str(image), text=False)
    assert result.returncode == 0, result.stderr
    archive = tarfile.open(fileobj=io.BytesIO(program_output(result.stdout)))

    seen = set()
    for member in archive:
        host = Path("/" + member.name)
        seen.add(host)
        if member.isfile():
            assert archive.extractfile(member).read() == host.read_bytes(), host
        elif member.issym():
            assert host.is_symlink() and os.readlink(host) == member.linkname
        else:
            assert member.isdir() and host.is_dir() and not host.is_symlink()
    expected = {PYTHON_LIB, *PYTHON_LIB.rglob("*")}
    assert seen == expected


@pytest.mark.slow
@pytest.mark.skipif(not PYTHON_LIB.is_dir(), reason=f"{PYTHON_LIB} is not here")
def test_find_and_ls_agree_with_native_on_the_python_standard_library(tmp_path):
    image = build(
        tmp_path / "stdlib.qcow2", "--from-host", BUSYBOX, "--from-host",
        str(PYTHON_LIB), "--cmdline", BUSYBOX,
    )  # fmt: skip

    def columns(listing):
        # Type, size (files only: directory sizes are the file system's own
        # choice) and name with link target; modes, owners and times differ.
        rows = []
        for line in listing.splitlines():
            if line.startswith("total "):
                continue  # blocks in use, counted by each file system its way
            fields = line.split(None, 8)
            if len(fields) < 9:
                rows.append(line)
                continue
            kind = fields[0][0]
            rows.append((kind, fields[4] if kind == "-" else "", fields[8]))
        return rows

    for command in (
        [BUSYBOX, "find", str(PYTHON_LIB)],
        [BUSYBOX, "ls", "-laR", str(PYTHON_LIB)],
    ):
        native = subprocess.run(command, capture_output=True, text=True, check=True)
        guest = boot(image, "-e", " ".join(command))
        if "find" in command:
            # find lists in directory order, which is the file system's own.
            assert sorted(guest.splitlines()) == sorted(native.stdout.splitlines())
        else:
            assert columns(guest) == columns(native.stdout)


@pytest.mark.skipif(not PYTHON_LIB.is_dir(), reason=f"{PYTHON_LIB} is not here")
def test_python3_runs_a_script_from_rofs_in_qcow2(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        "import json, sys, zlib\n"
        "print(sys.version_info[:2], json.dumps({'crc': zlib.crc32(b'osv')}))\n"
    )
    python = os.path.realpath("/usr/bin/python3")
    image = build(
        tmp_path / "py.qcow2", "--from-host", python, "--from-host", str(PYTHON_LIB),
        "--from-host", str(script), "--cmdline", f"{python} {script}",
    )  # fmt: skip
    native = subprocess.run([python, str(script)], capture_output=True, text=True)

    assert boot(image) == native.stdout


def test_a_rofs_image_run_where_the_module_is_missing_names_the_pip_command(
    busybox_image, tmp_path
):
    # The same osv, its dependencies and nothing else on the import path:
    # neither site-packages (where osv-mod-rofs is installed) nor PYTHONPATH.
    import cython
    import elftools
    import pluggy

    import osv

    site = tmp_path / "site"
    for package in (osv, pluggy, elftools, cython):
        source = Path(package.__file__)
        if source.name == "__init__.py":
            shutil.copytree(source.parent, site / source.parent.name)
        else:
            site.mkdir(exist_ok=True)
            shutil.copy(source, site / source.name)
    code = (
        f"import sys; sys.path.insert(0, {str(site)!r}); from osv.cli import main; "
        f"sys.exit(main(['run', {str(busybox_image)!r}]))"
    )

    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True
    )

    assert result.returncode == 1
    assert result.stderr == (
        "osv: error: module 'rofs' is not installed; to fix it run: "
        "pip install osv-mod-rofs\n"
    )


# ---------------------------------------------------------------------------
# Host modification times, kept by both root file systems
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("fs", ["rofs", "ramfs"])
def test_files_keep_their_host_times_so_cached_bytecode_stays_valid(tmp_path, fs):
    app = tmp_path / "app"
    (app / "sub").mkdir(parents=True)
    (app / "mod.py").write_text("VALUE = 42\n")
    (app / "sub" / "data.txt").write_text("data\n")
    os.utime(app / "mod.py", ns=(1, 1_650_000_000_987_654_321))
    os.utime(app / "sub" / "data.txt", ns=(1, 1_600_000_000_000_000_007))
    os.utime(app / "sub", ns=(1, 1_550_000_000_000_000_000))
    # Compiled by the interpreter the guest runs, as its import would.
    subprocess.run([PYTHON, "-m", "py_compile", str(app / "mod.py")], check=True)
    # Enough of the standard library for an interpreter without site.
    image = build(
        tmp_path / f"{fs}.img", "--fs", fs, "--from-host", BUSYBOX,
        "--from-host", PYTHON, "--from-host", str(PYTHON_LIB / "encodings"),
        "--from-host", str(PYTHON_LIB / "os.py"), "--from-host", str(app),
        "--cmdline", BUSYBOX,
    )  # fmt: skip

    stat = [BUSYBOX, "stat", "-c", "%n:%Y", f"{app}/mod.py", f"{app}/sub",
            f"{app}/sub/data.txt"]  # fmt: skip
    output = boot(image, "-e", " ".join(stat))
    assert output == subprocess.run(stat, capture_output=True, text=True).stdout
    times = [line.rpartition(":")[2] for line in output.splitlines()]
    assert times == ["1650000000", "1550000000", "1600000000"]

    # python -v says when a cached .pyc matches its source; a stale one
    # would be recompiled (and, on a writable root, rewritten) every run.
    code = f"import sys; sys.path.insert(0, '{app}'); import mod; print(mod.VALUE)"
    result = osv("run", str(image), "-e", f'{PYTHON} -S -v -c "{code}"')
    assert result.returncode == 0, result.stderr
    assert program_output(result.stdout).endswith("42\n")
    matches = f"# {app}/__pycache__/mod.cpython-311.pyc matches {app}/mod.py"
    assert matches in result.stderr
