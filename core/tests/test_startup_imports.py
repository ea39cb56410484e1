"""What `osv run` imports on its way to a static program, and the ELF reader it uses.

Start-up time is mostly the modules Python imports, so these tests pin down
which heavy ones the run path leaves out. They check names, never timings.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

import osv.elf
from osv.elf import ElfError, parse_elf
from osv.image import DiskImage

PROGRAMS = Path(__file__).parent / "programs"
GCC = shutil.which("gcc")
needs_gcc = pytest.mark.skipif(GCC is None, reason="needs gcc to build programs")
needs_kvm = pytest.mark.skipif(
    not os.path.exists("/dev/kvm"), reason="booting a VM needs /dev/kvm"
)

# Modules that booting a static program from an image recording no modules
# must not import: pyelftools (the ELF and program headers are read with
# struct; the debugger comes with pyelftools's construct library), the
# distribution scan that only an image listing modules needs, what only
# building or converting an image uses (manifests, conversion, shell quoting),
# platform (os.uname gives the release uname(2) reports) and resource (the
# guest's limits are the kernel's own table).
NOT_ON_THE_RUN_PATH = (
    "elftools",
    "pdb",
    "importlib.metadata",
    "osv.elf._deps",
    "osv.image._manifest",
    "osv.image._convert",
    "shutil",
    "subprocess",
    "tempfile",
    "datetime",
    "platform",
    "shlex",
    "resource",
)

# The dataclasses the run path may still define: ramfs copies a Stat and a
# StatFs with dataclasses.replace. Every other record there is a plain class,
# as making a dataclass compiles generated code at import time.
DATACLASSES_ON_THE_RUN_PATH = {"osv.vfs._stat.Stat", "osv.vfs._stat.StatFs"}


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _compile(tmp_path: Path, name: str, *flags: str) -> Path:
    output = tmp_path / f"{name}{'-'.join(('', *flags))}"
    subprocess.run(
        [GCC, "-O1", *flags, "-o", str(output), str(PROGRAMS / f"{name}.c")],
        check=True,
    )
    return output


@functools.cache
def _at_interpreter_start() -> set[str]:
    """What this interpreter imports before any of our code runs.

    A site-packages .pth file may import modules of its own (certifi's, say,
    brings shutil and tempfile); those are the installation's, not ours.
    """
    result = _python("-c", "import sys; print(' '.join(sys.modules))")
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def _imported(importtime_output: str) -> set[str]:
    """Module names from ``-X importtime`` lines: ``import time: self | cum | name``."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in importtime_output.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def _heavy(imported: set[str]) -> list[str]:
    """The heavy modules among *imported*, leaving out the interpreter's own."""
    return sorted(
        name
        for name in imported - _at_interpreter_start()
        if any(
            name == heavy or name.startswith(heavy + ".")
            for heavy in NOT_ON_THE_RUN_PATH
        )
    )


@pytest.fixture(scope="module")
def hello_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ramfs image of a static program, assembled with no modules."""
    if GCC is None:
        pytest.skip("needs gcc to build programs")
    directory = tmp_path_factory.mktemp("startup")
    program = _compile(directory, "echo_args", "-static")
    image = directory / "hello.img"
    built = _python(
        "-m", "osv", "build", "--fs", "ramfs", "--format", "raw",
        "-o", str(image), "--from-host", str(program),
        "--cmdline", f"{program} 0 hello",
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    with DiskImage.open(image) as disk:
        assert disk.descriptor.modules == {}
    return image


@needs_kvm
def test_running_a_static_program_imports_none_of_the_heavy_modules(hello_image):
    result = _python("-X", "importtime", "-m", "osv", "run", str(hello_image))

    assert result.returncode == 0, result.stderr
    assert "arg 2: [hello]" in result.stdout
    imported = _imported(result.stderr)
    # The run path was really traced: the kernel and the boot were imported.
    assert {"osv._kernel", "osv.boot._sequence", "osv.elf._loader"} <= imported
    assert _heavy(imported) == []


def test_the_kernel_and_the_image_reader_define_no_other_dataclasses():
    script = textwrap.dedent(
        """
        import sys
        from osv.boot._sequence import _import_kernel
        import osv.image
        _import_kernel()
        for name, module in sorted(sys.modules.items()):
            if name == "osv" or name.startswith("osv."):
                for value in vars(module).values():
                    if (
                        isinstance(value, type)
                        and value.__module__ == name
                        and "__dataclass_fields__" in vars(value)
                    ):
                        print(f"{name}.{value.__qualname__}")
        """
    )
    result = _python("-c", script)

    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) <= DATACLASSES_ON_THE_RUN_PATH


def test_importing_the_package_and_the_command_line_loads_no_plugin_machinery():
    script = textwrap.dedent(
        """
        import sys
        import osv, osv.cli
        osv.__version__
        osv.cli.build_parser("run").parse_args(["run", "some.img"])
        print(" ".join(sorted(sys.modules)))
        """
    )
    result = _python("-c", script)

    assert result.returncode == 0, result.stderr
    imported = set(result.stdout.split())
    assert "osv._cmd_run" in imported
    unwanted = {"pluggy", "osv._plugins", "osv._cext", "dataclasses"}
    assert imported & unwanted - _at_interpreter_start() == set()
    assert _heavy(imported) == []
    other_commands = {name for name in imported if name.startswith("osv._cmd_")}
    assert other_commands == {"osv._cmd_run"}


def test_finding_libraries_still_imports_its_module_when_first_used():
    script = textwrap.dedent(
        """
        import sys
        import osv.elf
        before = "osv.elf._deps" in sys.modules
        from osv.elf import MissingLibraryError, resolve_dependencies
        print(before, "osv.elf._deps" in sys.modules,
              issubclass(MissingLibraryError, osv.elf.ElfError),
              callable(resolve_dependencies))
        """
    )
    result = _python("-c", script)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "True", "True"]
    assert set(osv.elf.__all__) <= set(dir(osv.elf))
    for name in osv.elf.__all__:
        assert getattr(osv.elf, name) is not None


def _by_pyelftools(path: Path) -> dict[str, object]:
    """The fields parse_elf reports, as the reference library reads them."""
    with open(path, "rb") as stream:
        elf = ELFFile(stream)
        segments = list(elf.iter_segments())
        interpreter = [
            s.get_interp_name() for s in segments if s["p_type"] == "PT_INTERP"
        ]
        phdr = [s["p_vaddr"] for s in segments if s["p_type"] == "PT_PHDR"]
        return {
            "e_type": elf["e_type"],
            "e_entry": elf["e_entry"],
            "e_phoff": elf["e_phoff"],
            "e_phnum": elf["e_phnum"],
            "e_phentsize": elf["e_phentsize"],
            "segments": [
                (s["p_offset"], s["p_vaddr"], s["p_filesz"], s["p_memsz"], s["p_flags"])
                for s in segments
                if s["p_type"] == "PT_LOAD"
            ],
            "interpreter": interpreter[0] if interpreter else None,
            "phdr_vaddr": phdr[0] if phdr else None,
        }


def _by_parse_elf(path: Path) -> dict[str, object]:
    program = parse_elf(str(path), path.read_bytes())
    return {
        "e_type": program.e_type,
        "e_entry": program.e_entry,
        "e_phoff": program.e_phoff,
        "e_phnum": program.e_phnum,
        "e_phentsize": program.e_phentsize,
        "segments": [
            (s.p_offset, s.p_vaddr, s.p_filesz, s.p_memsz, s.p_flags)
            for s in program.segments
        ],
        "interpreter": program.interpreter,
        "phdr_vaddr": program.phdr_vaddr,
    }


@needs_gcc
@pytest.mark.parametrize("flags", [["-static"], ["-static-pie"], [], ["-no-pie"]])
def test_headers_read_without_pyelftools_match_pyelftools(tmp_path, flags):
    program = _compile(tmp_path, "echo_args", *flags)

    assert _by_parse_elf(program) == _by_pyelftools(program)


def test_the_python_interpreter_headers_match_pyelftools():
    # A large dynamically linked program the test machine certainly has.
    interpreter = Path(os.path.realpath(sys.executable))

    assert _by_parse_elf(interpreter) == _by_pyelftools(interpreter)


@needs_gcc
def test_an_object_file_is_refused_as_not_an_executable(tmp_path):
    obj = tmp_path / "echo_args.o"
    subprocess.run(
        [GCC, "-c", "-o", str(obj), str(PROGRAMS / "echo_args.c")], check=True
    )

    with pytest.raises(ElfError, match=r"not an executable \(ET_REL\)"):
        parse_elf(str(obj), obj.read_bytes())


@needs_gcc
def test_a_truncated_program_header_table_is_refused(tmp_path):
    program = _compile(tmp_path, "echo_args", "-static")
    data = program.read_bytes()
    header = _by_pyelftools(program)
    cut = header["e_phoff"] + header["e_phentsize"] // 2

    with pytest.raises(ElfError, match="program headers run past the end"):
        parse_elf("cut", data[:cut])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"#!/bin/sh\necho hello\n" + bytes(64), "no ELF header"),
        (b"\x7fELF", "no ELF header"),
        # An ELFCLASS32 header for the i386 (e_machine 3).
        (
            b"\x7fELF\x01\x01\x01" + bytes(9) + b"\x02\x00\x03\x00" + bytes(44),
            "not an x86-64",
        ),
    ],
)
def test_files_that_are_not_x86_64_elf_are_refused(data, message):
    with pytest.raises(ElfError, match=message):
        parse_elf("file", data)


@needs_gcc
def test_an_unterminated_interpreter_path_is_refused(tmp_path):
    program = _compile(tmp_path, "echo_args")
    data = bytearray(program.read_bytes())
    with open(program, "rb") as stream:
        interp = next(
            s for s in ELFFile(stream).iter_segments() if s["p_type"] == "PT_INTERP"
        )
        start, size = interp["p_offset"], interp["p_filesz"]
    data[start : start + size] = b"x" * size

    with pytest.raises(ElfError, match="PT_INTERP is not terminated"):
        parse_elf("bad-interp", bytes(data))
