"""The core's own file systems and system calls, registered like any module's."""

from osv.hookspecs import hookimpl


@hookimpl
def osv_filesystem_types():
    """Register ramfs, devfs and procfs."""
    # Imported on call, not at import time: building the plugin manager (for
    # `osv modules`, say) should not load the whole VFS.
    from osv.vfs import DevFs, ProcFs, RamFs

    return [RamFs, DevFs, ProcFs]


@hookimpl
def osv_syscall_families():
    """Register the Linux system calls the core implements, one table per family."""
    from osv.syscalls import files, io, memory, process, threads

    return [
        files.SYSCALLS,
        io.SYSCALLS,
        memory.SYSCALLS,
        process.SYSCALLS,
        threads.SYSCALLS,
    ]
