"""Booting an image: options, modules, file systems, then the application."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field

from osv.boot._cmdline import parse_command_line
from osv.boot._errors import BootError, CommandLineError, LoaderOptionError
from osv.boot._options import (
    BUILTIN_LOADER_OPTIONS,
    parse_loader_options,
    split_cmdline,
    usage_text,
)

logger = logging.getLogger(__name__)

# The file systems the core itself can serve as a root: anything else comes
# from a module (osv-mod-<name>).
CORE_ROOT_FILESYSTEMS = ("ramfs",)


@dataclass
class BootConfig:
    """What `osv run` asks for, beside the image."""

    image: str
    cmdline: str | None = None
    memory: int = 2 << 30
    vcpus: int = 1
    extra_options: list[str] = field(default_factory=list)


@dataclass
class BootResult:
    status: int
    syscalls: int = 0
    faults: int = 0
    boot_ns: int = 0
    first_instruction_ns: int = 0


class Console:
    """Where the kernel's own console lines go (stdout, as OSv prints them)."""

    def __init__(self, stream=None) -> None:  # noqa: ANN001
        self.stream = stream or sys.stdout

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def boot(config: BootConfig, console: Console | None = None) -> BootResult:
    """Boot ``config.image`` and run its command line; return the exit status."""
    import osv
    from osv import _plugins
    from osv._kernel import Kernel, KernelError, ProgramFault
    from osv.image import DiskImage, read_bootfs

    console = console or Console()
    started = time.monotonic_ns()

    with DiskImage.open(config.image) as image:
        descriptor = image.descriptor
        cmdline = config.cmdline if config.cmdline is not None else image.cmdline
        partitions = {p.index: p for p in image.partitions()}
        root = partitions.get(1)
        root_data = image.read(root.start, root.size) if root and root.size else b""

    for option in reversed(config.extra_options):
        cmdline = f"{option} {cmdline}"

    # Modules: exactly those the image was assembled with.
    modules = _plugins.load_modules(list(descriptor.modules))
    plugins = modules.plugin_manager
    tokens, app_cmdline = split_cmdline(cmdline)
    known = [*BUILTIN_LOADER_OPTIONS, *_plugins.loader_options(plugins)]
    try:
        options = parse_loader_options(tokens, extra=_plugins.loader_options(plugins))
    except LoaderOptionError as exc:
        console.line(str(exc))
        console.line(usage_text(known))
        raise BootError(str(exc)) from None
    for warning in options.warnings:
        console.line(warning)

    fs_type = descriptor.fs_type
    if (
        fs_type not in CORE_ROOT_FILESYSTEMS
        and fs_type not in _plugins.filesystem_types(plugins)
    ):
        raise BootError(
            f"this image's root file system is {fs_type}; "
            f"install its module with: pip install osv-mod-{fs_type}"
        )

    console.line(f"OSv v{osv.__version__}")
    kernel = Kernel(
        memory=config.memory,
        vcpus=config.vcpus,
        plugins=plugins,
        version=osv.__version__,
    )
    kernel.boot_ns = started
    try:
        environment = {
            "OSV_VERSION": osv.__version__,
            "OSV_CPUS": str(config.vcpus),
        }
        _mount_filesystems(kernel, fs_type, root_data, read_bootfs)
        kernel.stamp("VFS initialized")
        for assignment in options.env:
            key, _, value = assignment.partition("=")
            environment[key] = value
            if options.verbose:
                console.line(f"Setting in environment: {assignment}")
        cwd = options.cwd or "/"
        _plugins.run_boot(plugins, kernel)
        kernel.stamp("Total time")
        if options.bootchart:
            previous = 0
            for stage, ns in kernel.bootchart:
                console.line(
                    f"\t{stage}: {ns / 1e6:.2f}ms, (+{(ns - previous) / 1e6:.2f}ms)"
                )
                previous = ns
        else:
            console.line(f"Booted up in {kernel.bootchart[-1][1] / 1e6:.2f} ms")

        stdio = _stdio(kernel, options, console)
        console.line(f"Cmdline: {app_cmdline}")
        try:
            commands = parse_command_line(app_cmdline, environment)
        except CommandLineError:
            console.line("Failed to parse command line.")
            raise BootError("failed to parse the command line") from None
        if not commands:
            console.line("This image has an empty command line. Nothing to run.")
            raise BootError("the image has an empty command line")

        result = BootResult(status=0, boot_ns=kernel.bootchart[-1][1])
        envp = [f"{k}={v}" for k, v in environment.items()]
        for command in commands:
            if command.terminator in ("&", "&!"):
                raise BootError(
                    "running several programs at once ('&', '&!') is not supported yet"
                )
            try:
                process = kernel.spawn(command.argv, envp, cwd, stdio)
            except KernelError as exc:
                console.line(f"{exc}. Powering off.")
                raise BootError(str(exc)) from None
            try:
                run = kernel.run(process)
            except ProgramFault as fault:
                sys.stderr.write(fault.report + "\n")
                sys.stderr.flush()
                result.status = 128 + fault.signal
                break
            if options.verbose:
                console.line(f"program {command.argv[0]} returned {run.status}")
            result.status = run.status
            result.syscalls += run.syscalls
            result.faults += run.faults
            result.first_instruction_ns = run.first_instruction_ns
        _plugins.run_shutdown(plugins, kernel)
        if options.verbose:
            console.line("Powering off.")
        return result
    finally:
        kernel.close()


def _mount_filesystems(kernel, fs_type: str, root_data: bytes, read_bootfs) -> None:  # noqa: ANN001
    """ramfs at /, filled from the bootfs in the root partition; devfs; procfs."""
    vfs = kernel.vfs
    kernel.mount("ramfs", "none", "/")
    if fs_type == "ramfs" and root_data:
        _unpack_bootfs(vfs, root_data, read_bootfs)
    for path in ("/dev", "/proc", "/tmp"):
        try:
            vfs.mkdir(path, 0o755)
        except Exception:  # noqa: BLE001 - already there (from the image)
            pass
    kernel.mount("devfs", "none", "/dev")
    kernel.mount("procfs", "none", "/proc")


def _unpack_bootfs(vfs, blob: bytes, read_bootfs) -> None:  # noqa: ANN001
    from osv.vfs import FsError

    for record in read_bootfs(blob):
        path = "/" + record.name.strip("/")
        # Parents first, as OSv's unpacker does; existing ones are fine.
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            try:
                vfs.mkdir("/" + "/".join(parts[:depth]), 0o755)
            except FsError:
                pass
        if record.is_directory:
            try:
                vfs.mkdir(path, 0o755)
            except FsError:
                pass
        elif record.is_symlink:
            target = bytes(record.content(blob)).rstrip(b"\0").decode()
            vfs.symlink(target, path)
        else:
            f = vfs.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o755)
            f.write(record.content(blob))
            f.close()


def _stdio(kernel, options, console: Console) -> list:  # noqa: ANN001
    """Files for fds 0, 1 and 2: the console, or the --redirect file of the guest."""
    redirect = options.redirect
    console_files = kernel.console_files()
    if redirect is None:
        return console_files
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if redirect.append else os.O_TRUNC)
    target = kernel.vfs.open(redirect.path, flags, 0o644)
    verb = "Appending" if redirect.append else "Writing"
    console.line(f"{verb} stdout and stderr to {redirect.path}")
    return [console_files[0], target, target.acquire()]
