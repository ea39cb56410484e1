"""Booting an image: options, modules, file systems, then the application."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import queue
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

from osv._record import Record
from osv.boot._cmdline import parse_command_line
from osv.boot._errors import BootError, CommandLineError, LoaderOptionError
from osv.boot._options import (
    BUILTIN_LOADER_OPTIONS,
    parse_loader_options,
    split_cmdline,
    usage_text,
)
from osv.boot._unpack import unpack_bootfs

if TYPE_CHECKING:
    from osv.image import DiskImage

logger = logging.getLogger(__name__)

# The file systems the core itself can serve as a root: anything else comes
# from a module (osv-mod-<name>).
CORE_ROOT_FILESYSTEMS = ("ramfs",)

# How the root file system is found, as OSv's loader does it. The boot
# starts on a ramfs (holding the image's bootfs, for ramfs images). Then
# --rootfs=TYPE mounts that type from its device and makes it the root;
# --rootfs=ramfs stays on the boot ramfs; no --rootfs, or a type OSv does
# not know, tries the types below in order and stays on the boot ramfs if
# none mounts. A type whose module the image does not load is skipped, as
# OSv skips a file system whose library is not in the image.
#
# OSv mounts the new root at /<type> and then pivots it to /. Our VFS stacks
# a mount on / directly, with the same result for the program: / is the new
# file system and the boot ramfs lies hidden below it. --nopivot leaves it
# at /<type>. After a pivot, devfs, procfs and (on a read-only rofs root) a
# ramfs for /tmp are mounted on the new root, as OSv's fstab for rofs images
# does.
AUTO_DISCOVERY_ORDER = ("rofs", "virtiofs", "ext", "zfs")
ROOT_DEVICES = {
    "rofs": "/dev/vblk0.1",
    "virtiofs": "/dev/virtiofs0",
    "ext": "/dev/vblk0.1",
    "zfs": "/dev/vblk0.1",
}
READ_ONLY_ROOTS = ("rofs", "virtiofs")
# The bootchart stage recorded once each type is mounted, named as OSv names it.
MOUNTED_STAGES = {
    "rofs": "ROFS mounted",
    "virtiofs": "Virtio-fs mounted",
    "ext": "EXT mounted",
    "zfs": "ZFS mounted",
}


class BootConfig(Record):
    """What `osv run` asks for, beside the image."""

    __slots__ = ("image", "cmdline", "memory", "vcpus", "extra_options")

    def __init__(
        self,
        image: str,
        cmdline: str | None = None,
        memory: int = 2 << 30,
        vcpus: int = 1,
        extra_options: list[str] | None = None,
    ) -> None:
        self.image = image
        self.cmdline = cmdline
        self.memory = memory
        self.vcpus = vcpus
        self.extra_options = [] if extra_options is None else extra_options


class BootResult(Record):
    """How a boot ended: the exit status, and what it cost on the way."""

    __slots__ = (
        "status",
        "reboot",
        "syscalls",
        "faults",
        "boot_ns",
        "first_instruction_ns",
        "kvm",
    )

    def __init__(
        self,
        status: int,
        reboot: bool = False,
        syscalls: int = 0,
        faults: int = 0,
        boot_ns: int = 0,
        first_instruction_ns: int = 0,
        kvm: dict[str, int] | None = None,
    ) -> None:
        self.status = status
        self.reboot = reboot
        self.syscalls = syscalls
        self.faults = faults
        self.boot_ns = boot_ns
        self.first_instruction_ns = first_instruction_ns
        #: KVM's own counters over the boot, summed over the vCPUs (``exits``,
        #: ``pf_fixed``, ...); empty where KVM does not offer them.
        self.kvm = {} if kvm is None else kvm


class Console:
    """Where the kernel's own console lines go (stdout, as OSv prints them)."""

    def __init__(self, stream=None) -> None:  # noqa: ANN001
        # None: the process's standard output, written with os.write.
        self.stream = stream

    def line(self, text: str) -> None:
        # The kernel's lines are best effort: a closed, full or broken host
        # stdout must not stop the program, which sees the error itself
        # when it writes. On the process's stdout they bypass sys.stdout's
        # buffer, where a failed write would stay and fail every later
        # flush, down to the interpreter's exit (status 120).
        stream = self.stream
        try:
            if stream is None:
                data = (text + "\n").encode("utf-8", "surrogateescape")
                while data:
                    data = data[os.write(1, data) :]
            else:
                stream.write(text + "\n")
                stream.flush()
        except (OSError, ValueError):
            logger.debug("console line not written: %s", text)


def _import_kernel() -> None:
    """Import the kernel's modules before the boot clock starts.

    "Booted up in" measures the kernel's boot, as OSv's does; loading the
    Python code is the interpreter's start-up, a cost of its own.
    """
    # Importing makes thousands of objects that all live on, so the cyclic
    # garbage collector's passes over them meanwhile find nothing to free; it
    # waits until the imports are done (a few milliseconds of start-up).
    enabled = gc.isenabled()
    gc.disable()
    try:
        import json  # noqa: F401 - the image descriptor

        import osv._builtins  # noqa: F401
        import osv._kernel  # noqa: F401
        import osv._plugins  # noqa: F401
        import osv.hv._stats  # noqa: F401
        import osv.sched._procinfo  # noqa: F401
        import osv.syscalls.files  # noqa: F401
        import osv.syscalls.io  # noqa: F401
        import osv.syscalls.memory  # noqa: F401
        import osv.syscalls.process  # noqa: F401
        import osv.syscalls.threads  # noqa: F401
        import osv.vdso  # noqa: F401
        import osv.vfs  # noqa: F401
    finally:
        if enabled:
            gc.enable()


def boot(config: BootConfig, console: Console | None = None) -> BootResult:
    """Boot ``config.image`` and run its command line; return the exit status."""
    from osv.image import DiskImage

    _import_kernel()
    console = console or Console()
    started = time.monotonic_ns()

    # The image stays open while the VM runs: file systems on its partitions
    # read from it as the program asks for files.
    image = DiskImage.open(config.image)
    try:
        return _boot_image(config, console, started, image)
    finally:
        image.close()


def _boot_image(
    config: BootConfig, console: Console, started: int, image: DiskImage
) -> BootResult:
    import osv
    from osv import _plugins
    from osv._kernel import Kernel
    from osv.block import BlockError, disk_devices

    descriptor = image.descriptor
    cmdline = config.cmdline if config.cmdline is not None else image.cmdline
    try:
        devices = disk_devices(image.device)
    except BlockError as error:
        raise BootError(f"{image.path}: {error}") from None
    # A ramfs image keeps its whole tree in the root partition as a bootfs,
    # unpacked into the boot ramfs; other images are read as they are used.
    bootfs = b""
    root = devices.get(f"{image.device.name}.1")
    if descriptor.fs_type == "ramfs" and root is not None and root.size:
        bootfs = image.view(root.start, root.size)

    for option in reversed(config.extra_options):
        cmdline = f"{option} {cmdline}"

    # Modules: exactly those the image was assembled with.
    distributions = descriptor.extra.get("distributions")
    targets = descriptor.extra.get("entry_points")
    modules = _plugins.load_modules(
        list(descriptor.modules),
        distributions if isinstance(distributions, dict) else None,
        targets if isinstance(targets, dict) else None,
    )
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
    # The disk and its partitions, by OSv's names (vblk0, vblk0.1); file
    # systems that need a device find it here, and /dev shows each of them.
    kernel.block_devices = devices
    # What management services (a REST API module) report and change.
    kernel.cmdline = cmdline
    kernel.loader_options = options
    kernel.image_path = image.path
    try:
        environment = {
            "OSV_VERSION": osv.__version__,
            "OSV_CPUS": str(config.vcpus),
        }
        _mount_filesystems(
            kernel, options, console, bootfs, descriptor.extra.get("bootfs_mtimes")
        )
        for assignment in options.env:
            key, _, value = assignment.partition("=")
            environment[key] = value
            if options.verbose:
                console.line(f"Setting in environment: {assignment}")
        cwd = options.cwd or "/"
        kernel.environment = environment
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

        redirect = _redirect(kernel, options, console)
        # From the "Cmdline:" line on, a signal to this process goes to the
        # programs (a client that waits for that line can rely on it).
        with _host_signals_to_programs(kernel):
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
            _run_commands(
                kernel, commands, envp, cwd, redirect, result, options, console
            )
        result.reboot = kernel.reboot_requested
        result.kvm = kernel.machine.kvm_counters()
        _plugins.run_shutdown(plugins, kernel)
        _unmount_all(kernel)
        if options.verbose:
            console.line("Powering off.")
        return result
    finally:
        kernel.close()


# Signals that end or interrupt a program on a terminal, sent to `osv run`.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


@contextlib.contextmanager
def _host_signals_to_programs(kernel):  # noqa: ANN001, ANN202
    """While programs run, the host's SIGINT, SIGTERM, SIGHUP and SIGQUIT to
    this process go to them (Ctrl-C reaches the program, as in a container).

    Python runs signal handlers in the main thread, possibly while it holds
    the kernel lock in a system call; so the handler only queues the signal,
    and a host thread of its own sends it to the programs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    queued: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    done = threading.Event()

    def forward() -> None:
        while (signum := queued.get()) is not None:
            logger.info(
                "sending the host's %s to the programs", signal.strsignal(signum)
            )
            # A signal that comes before the first program starts (or
            # between two) waits for the next one.
            while not kernel.signal_programs(signum):
                if done.wait(0.01):
                    return

    forwarder = threading.Thread(target=forward, name="host-signals", daemon=True)
    forwarder.start()
    previous = {}
    try:
        for signum in FORWARDED_SIGNALS:
            previous[signum] = signal.signal(signum, lambda n, _: queued.put(n))
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        done.set()
        queued.put(None)
        forwarder.join()


def _run_commands(kernel, commands, envp, cwd, redirect, result, options, console):  # noqa: ANN001, ANN202, PLR0913
    """Run the command line's commands, as OSv's terminators say."""
    from osv._kernel import KernelError

    background: list[tuple[object, bool]] = []
    foreground_ran = False
    for command in commands:
        if kernel.powering_off:
            break
        try:
            process = kernel.spawn(command.argv, envp, cwd, _stdio(kernel, redirect))
        except KernelError as exc:
            console.line(f"{exc}. Powering off.")
            raise BootError(str(exc)) from None
        # OSv's terminators: ";" (or the end) runs in the foreground; "&"
        # in the background, waited for before shutdown; "&!" in the
        # background, stopped once the foreground is done; "!" in the
        # foreground, stopping every other program when it returns.
        if command.terminator in ("&", "&!"):
            kernel.start(process)
            background.append((process, command.terminator == "&!"))
            continue
        foreground_ran = True
        _account(result, command, _run(kernel, process), options, console)
        if command.terminator == "!":
            for other, _daemon in background:
                kernel.terminate(other)
    for process, daemon in background:
        if daemon:
            continue
        process.ended.wait()
        outcome = process.fault or process.result
        if foreground_ran:
            _report_fault(outcome)
        else:
            _account(result, process, outcome, options, console)
    for process, daemon in background:
        if daemon:
            kernel.terminate(process)
            process.ended.wait()


def _mount_filesystems(kernel, options, console, bootfs, time_runs):  # noqa: ANN001, ANN201
    """The boot ramfs at / (with the bootfs), the root file system, devfs, procfs.

    ``time_runs`` is the image's table of the bootfs records' modification
    times, or None for an image made without one.
    """
    from osv.image import decode_time_runs, read_bootfs
    from osv.vfs import FsError

    vfs = kernel.vfs
    kernel.mount("ramfs", "none", "/")
    if bootfs:
        records = read_bootfs(bootfs)
        times = None
        if time_runs is not None:
            times = decode_time_runs(time_runs, len(records), "bootfs_mtimes")
        unpack_bootfs(vfs, memoryview(bootfs), records, times)
    kernel.stamp("VFS initialized")

    root_type = _mount_root(kernel, options, console)
    on_boot_ramfs = root_type is None or options.flag("nopivot")
    mounts = [("devfs", "/dev"), ("procfs", "/proc")]
    if not on_boot_ramfs and root_type in READ_ONLY_ROOTS:
        # A writable /tmp, as OSv's fstab for rofs images mounts it. Files
        # the image holds below /tmp (host paths there are common) stay
        # visible: the new ramfs starts as their copy-on-write copy.
        mounts.append(("ramfs", "/tmp"))
    if on_boot_ramfs:
        for path in ("/dev", "/proc", "/tmp"):
            try:
                vfs.mkdir(path, 0o755)
            except FsError:
                pass  # already there (from the image)
    for fs_type, path in mounts:
        try:
            if fs_type == "devfs":
                _mount_devfs(kernel, path)
            elif path == "/tmp":
                lower = None if _is_empty_directory(vfs, path) else vfs.resolve(path)
                kernel.mount(fs_type, "none", path)
                if lower is not None:
                    made = vfs.resolve(path).populate_from(lower)
                    logger.info("/tmp: %d entries of the image, copied on write", made)
            else:
                kernel.mount(fs_type, "none", path)
        except FsError as error:
            if fs_type == "devfs":
                # The console the program writes to lives in /dev.
                raise BootError(
                    f"cannot mount devfs on {path} of the {root_type} root file "
                    f"system: {error.message}"
                ) from None
            logger.warning("not mounting %s on %s: %s", fs_type, path, error.message)
    _mount_requested(kernel, options, console)


def _mount_requested(kernel, options, console) -> None:  # noqa: ANN001
    """The --mount-fs=TYPE,SOURCE,DIR mounts, made once the root is in place.

    As in OSv, a mount that fails is reported and the boot goes on; a missing
    mount point is created where the file system allows it.
    """
    from osv._kernel import KernelError
    from osv.vfs import FsError

    for request in options.mount_fs:
        try:
            try:
                kernel.vfs.resolve(request.mount_point)
            except FsError:
                kernel.vfs.mkdir(request.mount_point, 0o755)
                console.line(f"created missing mount point {request.mount_point}")
            kernel.mount(request.fs_type, request.source, request.mount_point)
        except (FsError, KernelError) as error:
            console.line(
                f"Failed to mount {request.source} ({request.fs_type}) on "
                f"{request.mount_point}: {_reason(error)}"
            )


def _unmount_all(kernel) -> None:  # noqa: ANN001
    """Take every file system down, the last mounted first, as a shutdown does.

    Each one's unmount hook runs (rofs logs its cache figures there); files
    still open keep working, so this never waits on the program.
    """
    from osv.vfs import MNT_DETACH, FsError

    # Detaching the mount on / takes every mount below it along, children
    # first; a root stacked on the boot ramfs uncovers it for the next turn.
    vfs = kernel.vfs
    while vfs.mounts():
        try:
            vfs.umount("/", MNT_DETACH)
        except FsError as error:
            logger.debug("unmounting at shutdown: %s", error)
            return


def _is_empty_directory(vfs, path: str) -> bool:  # noqa: ANN001
    from osv.vfs import FsError

    try:
        directory = vfs.resolve(path)
        return directory.is_dir and not list(directory.readdir())
    except FsError:
        return False


def _mount_root(kernel, options, console) -> str | None:  # noqa: ANN001
    """Mount the root file system as --rootfs asks; return its type, or None
    when the boot stays on the boot ramfs."""
    from osv._kernel import KernelError
    from osv.vfs import FsError

    if options.nomount:
        return None
    requested = options.rootfs
    if requested == "ramfs":
        return None
    if requested in ROOT_DEVICES:
        try:
            _mount_root_as(kernel, requested, options)
        except (FsError, KernelError) as error:
            if options.verbose:
                console.line(f"Could not mount {requested} root filesystem.")
            raise BootError(
                f"cannot mount the {requested} root file system from "
                f"{ROOT_DEVICES[requested]}: {_reason(error)}"
            ) from None
        return requested

    for fs_type in AUTO_DISCOVERY_ORDER:
        if fs_type not in kernel.filesystem_types:
            continue
        try:
            _mount_root_as(kernel, fs_type, options)
        except (FsError, KernelError) as error:
            logger.debug("root file system is not %s: %s", fs_type, _reason(error))
            continue
        return fs_type
    # OSv prints this among its debug messages, shown with --verbose only.
    if options.verbose:
        console.line("Failed to discover the rootfs filesystem. Staying on bootfs.")
    return None


def _mount_root_as(kernel, fs_type: str, options) -> None:  # noqa: ANN001
    pivot = not options.flag("nopivot")
    mountpoint = "/" if pivot else f"/{fs_type}"
    if not pivot:
        kernel.vfs.mkdir(mountpoint, 0o755)
    mount_options = ""
    if fs_type == "rofs" and options.flag("disable_rofs_cache"):
        mount_options = "cache=off"
    device = ROOT_DEVICES[fs_type]
    try:
        kernel.mount(
            fs_type,
            device,
            mountpoint,
            mount_options,
            readonly=fs_type in READ_ONLY_ROOTS,
        )
    except BaseException:
        if not pivot:
            kernel.vfs.rmdir(mountpoint)
        raise
    kernel.stamp(MOUNTED_STAGES[fs_type])
    logger.info("root file system: %s from %s on %s", fs_type, device, mountpoint)


def _mount_devfs(kernel, path: str) -> None:  # noqa: ANN001
    """devfs on *path*, with a node for each of the kernel's block devices."""
    from osv.block import block_device_node

    devfs = kernel.make_filesystem("devfs")
    for minor, (name, device) in enumerate(kernel.block_devices.items()):
        devfs.add_device(name, block_device_node(device, minor))
    kernel.vfs.mount(devfs, "none", path)
    kernel.log(f"VFS: mounting devfs at {path}")


def _reason(error: Exception) -> str:
    return getattr(error, "message", None) or str(error)


def _redirect(kernel, options, console: Console):  # noqa: ANN001, ANN202
    """The guest file that --redirect names, opened once (or None)."""
    redirect = options.redirect
    if redirect is None:
        return None
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if redirect.append else os.O_TRUNC)
    target = kernel.vfs.open(redirect.path, flags, 0o644)
    verb = "Appending" if redirect.append else "Writing"
    console.line(f"{verb} stdout and stderr to {redirect.path}")
    return target


def _stdio(kernel, redirect) -> list:  # noqa: ANN001
    """Files for a program's fds 0, 1 and 2: the console, or the redirect file."""
    console_files = kernel.console_files()
    if redirect is None:
        return console_files
    for unused in console_files[1:]:
        unused.close()
    return [console_files[0], redirect.acquire(), redirect.acquire()]


def _run(kernel, process):  # noqa: ANN001, ANN202
    """Run a foreground program; its RunResult, or its ProgramFault."""
    from osv._kernel import ProgramFault

    try:
        return kernel.run(process)
    except ProgramFault as fault:
        return fault


def _report_fault(outcome) -> None:  # noqa: ANN001
    report = getattr(outcome, "report", None)
    if report is not None:
        sys.stderr.write(report + "\n")
        sys.stderr.flush()


def _account(result: BootResult, command, outcome, options, console) -> None:  # noqa: ANN001
    """Fold one program's outcome (RunResult or fault) into the boot's result."""
    if isinstance(outcome, BaseException) and getattr(outcome, "report", None) is None:
        raise outcome
    if getattr(outcome, "report", None) is not None:
        _report_fault(outcome)
        result.status = 128 + outcome.signal
        return
    if outcome is None:
        return
    if options.verbose:
        console.line(f"program {command.argv[0]} returned {outcome.status}")
    result.status = outcome.status
    result.syscalls += outcome.syscalls
    result.faults += outcome.faults
    result.first_instruction_ns = outcome.first_instruction_ns
