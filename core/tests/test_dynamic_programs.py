"""Dynamically linked programs from the host (coreutils, python3, sqlite3) in the VM."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from guest import native, osv, program_output

PYTHON = "/usr/bin/python3.11"
STDLIB = "/usr/lib/python3.11"
SQLITE = shutil.which("sqlite3")
COREUTILS = [
    "ls", "cat", "head", "tail", "wc", "sort", "uniq", "tr", "cut", "sha256sum",
    "md5sum", "stat", "du", "env", "find",
]  # fmt: skip

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/kvm"), reason="these tests boot VMs and need /dev/kvm"
)


@pytest.fixture(scope="module")
def data_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree of text and binary files, placed in the image at its host path."""
    root = tmp_path_factory.mktemp("data")
    (root / "sub" / "deeper").mkdir(parents=True)
    words = ["pear", "apple", "fig", "apple", "kiwi", "pear", "plum"]
    (root / "words.txt").write_text(
        "".join(f"{w}\t{i}\t{w.upper()}\n" for i, w in enumerate(words * 40))
    )
    (root / "numbers.txt").write_text(
        "".join(f"{(i * 7919) % 1000}\n" for i in range(500))
    )
    (root / "blob.bin").write_bytes(os.urandom(100_000))
    (root / "sub" / "a.txt").write_text("a\n")
    (root / "sub" / "deeper" / "b.txt").write_text("b\n" * 1000)
    (root / "rows.json").write_text(
        json.dumps([{"v": i, "w": i * i} for i in range(200)])
    )
    (root / "link").symlink_to("words.txt")
    (root / "script.py").write_text(
        "import json, sys\n"
        f"rows = json.load(open('{root}/rows.json'))\n"
        "with open('/tmp/result.txt', 'w') as f:\n"
        "    f.write(f\"sum={sum(r['v'] for r in rows)} squares={sum(r['w'] for r in rows)}\\n\")\n"
        "print(open('/tmp/result.txt').read(), end='')\n"
        "import os; os.unlink('/tmp/result.txt'); print(os.path.exists('/tmp/result.txt'))\n"
    )
    (root / "db.sql").write_text(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, g INTEGER, v REAL);\n"
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<10000)\n"
        "INSERT INTO t(g, v) SELECT x % 7, x * 1.5 FROM c;\n"
        "SELECT g, count(*), sum(v), avg(v) FROM t GROUP BY g;\n"
        "SELECT count(*), min(v), max(v), total(id) FROM t;\n"
    )
    return root


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, data_tree: Path) -> Path:
    path = tmp_path_factory.mktemp("image") / "dynamic.img"
    programs = [shutil.which(name) for name in COREUTILS]
    # /etc/passwd and /etc/group let programs name users (and find HOME) as
    # they do natively.
    programs += [PYTHON, str(data_tree), "/etc/passwd", "/etc/group"]
    if SQLITE:
        programs.append(SQLITE)
    args = [arg for program in programs for arg in ("--from-host", program)]
    # The standard library without its test suite, whose deepest names do not
    # fit bootfs records, listed in an OSv manifest.
    manifest = path.parent / "stdlib.manifest"
    with open(manifest, "w") as out:
        for directory, subdirs, files in os.walk(STDLIB):
            subdirs[:] = [d for d in subdirs if d not in ("test", "idlelib")]
            for name in files:
                host = os.path.join(directory, name)
                out.write(f"{host}: {host}\n")
    built = osv("build", "--fs", "ramfs", "--format", "raw", "-o", str(path), *args,
                "--manifest", str(manifest), "--cmdline", "/bin/true")  # fmt: skip
    assert built.returncode == 0, built.stderr
    return path


def run(image: Path, argv: list[str], stdin=None) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    cmdline = " ".join(f'"{word}"' for word in argv)
    return osv("run", str(image), "-e", cmdline, stdin=stdin)


def assert_same(vm, expected) -> None:  # noqa: ANN001
    assert program_output(vm.stdout) == expected.stdout
    assert vm.stderr == expected.stderr
    assert vm.returncode == expected.returncode


COMMANDS = [
    ["cat", "{d}/words.txt"],
    ["head", "-n", "13", "{d}/words.txt"],
    ["tail", "-n", "9", "{d}/numbers.txt"],
    ["wc", "{d}/words.txt", "{d}/numbers.txt", "{d}/blob.bin"],
    ["sort", "-n", "{d}/numbers.txt"],
    ["sort", "-k2,2n", "-t", "\t", "{d}/words.txt"],
    ["uniq", "-c", "{d}/numbers.txt"],
    ["cut", "-f", "1,3", "{d}/words.txt"],
    ["sha256sum", "{d}/blob.bin", "{d}/words.txt"],
    ["md5sum", "{d}/blob.bin"],
    ["stat", "-c", "%n %s %F %h", "{d}/words.txt", "{d}/sub", "{d}/link"],
    ["du", "-s", "--apparent-size", "{d}/sub"],
    ["env"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c[:2]))
def test_coreutils_match_native(
    image: Path, data_tree: Path, command: list[str]
) -> None:
    argv = [shutil.which(command[0]), *(w.format(d=data_tree) for w in command[1:])]
    vm = run(image, argv)
    expected = native(argv)
    if command == ["env"]:
        # The kernel sets OSV_VERSION and OSV_CPUS in every program's environment.
        lines = program_output(vm.stdout).splitlines()
        assert sorted(line.split("=")[0] for line in lines) == [
            "OSV_CPUS",
            "OSV_VERSION",
        ]
        return
    assert_same(vm, expected)


def test_tr_reads_stdin_like_native(image: Path, data_tree: Path) -> None:
    argv = [shutil.which("tr"), "a-z", "A-Z"]
    with open(data_tree / "words.txt") as stdin:
        vm = run(image, argv, stdin=stdin)
    with open(data_tree / "words.txt") as stdin:
        assert_same(vm, native(argv, stdin=stdin))


def test_find_type_f_sorted_matches_native(image: Path, data_tree: Path) -> None:
    argv = [shutil.which("find"), str(data_tree), "-type", "f"]
    vm = run(image, argv)
    expected = native(argv)
    assert vm.returncode == expected.returncode == 0
    assert sorted(program_output(vm.stdout).splitlines()) == sorted(
        expected.stdout.splitlines()
    )


def _ls_fields(text: str) -> list[tuple[str, ...]]:
    # Type, link count, size and name (after any arrow): permissions, owners
    # and times come from image formats that do not keep them.
    rows = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        rows.append((fields[0][0], fields[1], fields[4], " ".join(fields[8:])))
    return rows


def test_ls_la_names_types_sizes_match_native(image: Path, data_tree: Path) -> None:
    argv = [shutil.which("ls"), "-la", str(data_tree / "sub"), str(data_tree)]
    vm = run(image, argv)
    expected = native(argv)
    assert vm.returncode == expected.returncode == 0, vm.stderr
    vm_blocks = [b for b in program_output(vm.stdout).split("\n\n")]
    native_blocks = expected.stdout.split("\n\n")
    assert len(vm_blocks) == len(native_blocks) == 2
    for ours, theirs in zip(vm_blocks, native_blocks, strict=True):
        ours_rows = [r for r in _ls_fields(ours.split(":\n", 1)[1]) if r[3] != ".."]
        theirs_rows = [r for r in _ls_fields(theirs.split(":\n", 1)[1]) if r[3] != ".."]
        assert ours_rows == theirs_rows


@pytest.mark.parametrize(
    "code",
    [
        "print(6 * 7)",
        "import sys; print(sys.version_info[:2], sys.platform, sys.maxsize)",
        "import json, hashlib; print(hashlib.sha256(json.dumps({'a': [1, 2]}).encode()).hexdigest())",
        "import math, statistics; print(math.factorial(30), statistics.mean(range(101)))",
        "import re, collections; print(collections.Counter(re.findall(r'\\w+', 'a b a c b a')))",
        "import os; os.chdir('/tmp'); print(os.getcwd(), os.path.exists('/proc/self/exe'))",
    ],
)
def test_python_one_liners_match_native(image: Path, code: str) -> None:
    argv = [PYTHON, "-c", code]
    assert_same(run(image, argv), native(argv))


# Each line of /proc/self/maps that names the program or its dynamic linker
# shows that file's device and inode, and the place in the file, as on Linux
# (one line of Python: the command line shows it before the program's output).
MAPS_OF_LOADED_FILES = (
    "import os, sys; "
    "[print(f[1], f[2], int(f[4]) == os.stat(f[5]).st_ino, "
    "os.makedev(*(int(p, 16) for p in f[3].split(':'))) == os.stat(f[5]).st_dev) "
    "for f in (line.split() for line in open('/proc/self/maps')) "
    "if f[5:] and f[5] in (sys.executable, '/lib64/ld-linux-x86-64.so.2')]"
)


def test_maps_show_the_program_files_device_inode_and_offsets(image: Path) -> None:
    argv = [PYTHON, "-c", MAPS_OF_LOADED_FILES]
    vm = program_output(run(image, argv).stdout).splitlines()
    assert vm and all(line.endswith(" True True") for line in vm), vm
    # The program's text is at its file offset (python3.11: not 0).
    text = [line.split()[1] for line in vm if line.startswith("r-xp")]
    assert len(text) == 2 and all(int(offset, 16) for offset in text)


def test_python_script_reads_data_writes_tmp_and_reads_back(
    image: Path, data_tree: Path
) -> None:
    argv = [PYTHON, str(data_tree / "script.py")]
    vm = run(image, argv)
    assert_same(vm, native(argv))
    assert program_output(vm.stdout) == "sum=19900 squares=2646700\nFalse\n"


def test_python_json_tool_matches_native(image: Path, data_tree: Path) -> None:
    argv = [PYTHON, "-m", "json.tool", str(data_tree / "rows.json")]
    assert_same(run(image, argv), native(argv))


def test_python_sys_exit_status(image: Path) -> None:
    vm = run(image, [PYTHON, "-c", "import sys; sys.exit(3)"])
    assert vm.returncode == 3


FAULT_IN_LIBC = r"""
#include <stdio.h>
#include <string.h>
int main(void) {
    char *volatile bad = (char *)8;
    printf("about to fault\n");
    fflush(stdout);
    return (int)strlen(bad);  /* glibc's strlen reads address 8 */
}
"""


def test_a_fault_in_a_library_names_the_library(tmp_path: Path) -> None:
    source = tmp_path / "fault.c"
    source.write_text(FAULT_IN_LIBC)
    program = tmp_path / "fault"
    subprocess.run(["gcc", "-O1", "-o", str(program), str(source)], check=True)
    image = tmp_path / "fault.img"
    built = osv("build", "--fs", "ramfs", "-o", str(image), "--from-host", str(program))
    assert built.returncode == 0, built.stderr
    vm = osv("run", str(image))
    assert program_output(vm.stdout) == "about to fault\n"
    assert vm.returncode == 128 + 11
    report = vm.stderr.split("page fault at address 0x8")[1].splitlines()
    assert report[1].strip().startswith("rip ")
    assert report[1].endswith("libc.so.6)"), vm.stderr


@pytest.mark.skipif(SQLITE is None, reason="sqlite3 is not installed")
def test_sqlite3_ten_thousand_rows_match_native(
    image: Path, data_tree: Path, tmp_path: Path
) -> None:
    vm = run(image, [SQLITE, "/tmp/test.db", f".read {data_tree}/db.sql"])
    expected = native([SQLITE, str(tmp_path / "test.db"), f".read {data_tree}/db.sql"])
    assert_same(vm, expected)
    assert "10000|1.5|15000.0|50005000.0" in expected.stdout


def test_missing_library_gives_loaders_own_error(tmp_path: Path) -> None:
    # A manifest that carries python3 and the loader but not libz.
    manifest = tmp_path / "partial.manifest"
    lines = [
        f"{PYTHON}: {PYTHON}",
        "/lib64/ld-linux-x86-64.so.2: /lib64/ld-linux-x86-64.so.2",
    ]
    for lib in ("libc.so.6", "libm.so.6", "libexpat.so.1"):
        lines.append(f"/lib/x86_64-linux-gnu/{lib}: /lib/x86_64-linux-gnu/{lib}")
    manifest.write_text("\n".join(lines) + "\n")
    image = tmp_path / "partial.img"
    built = osv("build", "--fs", "ramfs", "--format", "raw", "-o", str(image),
                "--manifest", str(manifest), "--cmdline", f"{PYTHON} -c pass")  # fmt: skip
    assert built.returncode == 0, built.stderr
    vm = osv("run", str(image))
    assert vm.returncode == 127
    assert "error while loading shared libraries: libz.so.1" in vm.stderr


def test_manifest_of_a_missing_path_prints_only_the_error(tmp_path: Path) -> None:
    listed = osv("manifest", "--from-host", str(tmp_path / "nowhere"))
    assert listed.returncode == 1
    assert listed.stdout == ""
    assert listed.stderr.count("\n") == 1 and "nowhere" in listed.stderr


def test_build_names_a_library_missing_on_the_host(tmp_path: Path) -> None:
    program = tmp_path / "needs-missing"
    source = tmp_path / "main.c"
    source.write_text("int missing(void);\nint main(void) { return missing(); }\n")
    stub = tmp_path / "libmissing.so"
    library = tmp_path / "missing.c"
    library.write_text("int missing(void) { return 0; }\n")
    subprocess.run(["gcc", "-shared", "-o", str(stub), str(library)], check=True)
    subprocess.run(
        ["gcc", "-o", str(program), str(source), f"-L{tmp_path}", "-lmissing"],
        check=True,
    )
    stub.unlink()
    result = osv("build", "--fs", "ramfs", "--format", "raw", "-o", str(tmp_path / "x.img"),
                 "--from-host", str(program))  # fmt: skip
    assert result.returncode == 1
    assert "libmissing.so not found" in result.stderr


@pytest.mark.skipif(SQLITE is None, reason="sqlite3 is not installed")
def test_manifest_command_lines_build_a_working_image(tmp_path: Path) -> None:
    listed = osv("manifest", "--from-host", SQLITE)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == "[manifest]"
    assert any("libsqlite3.so.0: " in line for line in lines)
    assert any(line.startswith("/lib64/ld-linux-x86-64.so.2: ") for line in lines)
    manifest = tmp_path / "sqlite3.manifest"
    manifest.write_text(listed.stdout)
    image = tmp_path / "sqlite3.img"
    built = osv("build", "--fs", "ramfs", "--format", "raw", "-o", str(image),
                "--manifest", str(manifest), "--cmdline", f"{SQLITE} -version")  # fmt: skip
    assert built.returncode == 0, built.stderr
    vm = osv("run", str(image))
    assert program_output(vm.stdout) == native([SQLITE, "-version"]).stdout
