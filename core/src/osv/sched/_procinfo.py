"""What /proc shows about the running program, read from the kernel's state."""

from __future__ import annotations

import time

from osv.sched._sigqueue import SIG_IGN, bit
from osv.sched._task import current_task
from osv.vfs import FsError


class ProcessInfo:
    """The kernel's answer to procfs (osv.vfs.ProcProvider) for the current process."""

    def __init__(self, kernel) -> None:  # noqa: ANN001 - osv._kernel.Kernel
        self.kernel = kernel

    def _caller(self):  # noqa: ANN202
        """The calling guest thread's process, else the last one started."""
        task = current_task()
        return task.process if task is not None else self.kernel.current

    @property
    def _process(self):  # noqa: ANN202
        process = self._caller()
        if process is None:
            raise LookupError("no program is running")
        return process

    def pid(self) -> int:
        process = self._caller()
        return process.pid if process is not None else 1

    def exe_path(self) -> str:
        return self._process.exe

    def cmdline_bytes(self) -> bytes:
        return b"".join(arg.encode() + b"\0" for arg in self._process.argv)

    def maps_text(self) -> str:
        process = self._process
        vfs = process.vfs

        def name_of(area) -> str:  # noqa: ANN001 - osv.mm.VmArea
            # A file mapping names the file as it is called now, as Linux
            # does: renamed, or marked "(deleted)" once removed.
            vnode = area.vnode
            if vnode is None or getattr(vnode, "mount", None) is None:
                return area.name
            try:
                return vfs.realpath(vnode)
            except FsError:
                name = area.name
                return name if name.endswith(" (deleted)") else f"{name} (deleted)"

        return process.mm.maps_text(name_of)

    def status_text(self) -> str:
        process = self._process
        rss_kb = self.kernel.phys.used_bytes // 1024
        name = (process.name or process.exe.rsplit("/", 1)[-1])[:15]
        lines = [
            ("Name", name),
            ("Umask", f"{process.umask:04o}"),
            ("State", "R (running)"),
            ("Tgid", process.pid),
            ("Pid", process.pid),
            ("PPid", 0),
            ("Uid", "0\t0\t0\t0"),
            ("Gid", "0\t0\t0\t0"),
            ("FDSize", 64),
            ("VmRSS", f"{rss_kb:8d} kB"),
            ("Threads", len(process.tasks)),
            *self._signal_lines(process),
            ("Cpus_allowed_list", f"0-{self.kernel.vcpu_count - 1}"),
        ]
        return "".join(f"{key}:\t{value}\n" for key, value in lines)

    @staticmethod
    def _signal_lines(process) -> list[tuple[str, str]]:  # noqa: ANN001
        """SigPnd to SigCgt: the main thread's and the process's signal sets."""
        main = process.tasks[0] if process.tasks else None
        ignored = caught = 0
        for sig, action in process.signal_actions.items():
            if action.handler == SIG_IGN:
                ignored |= bit(sig)
            elif action.catches:
                caught |= bit(sig)
        values = [
            ("SigPnd", main.pending.bits if main else 0),
            ("ShdPnd", process.pending.bits),
            ("SigBlk", main.signal_mask if main else 0),
            ("SigIgn", ignored),
            ("SigCgt", caught),
        ]
        return [(key, f"{value:016x}") for key, value in values]

    def stat_text(self) -> str:
        process = self._process
        ticks = (time.monotonic_ns() - process.start_ns) // 10_000_000
        name = (process.name or process.exe.rsplit("/", 1)[-1])[:15]
        fields = [process.pid, f"({name})", "R", 0, process.pid, process.pid]
        fields += [0, -1, 0x400000, 0, 0, 0, 0, ticks, 0, 0, 0, 20, 0]
        fields += [len(process.tasks), 0, 0, self.kernel.phys.used_bytes]
        fields += [self.kernel.phys.used_bytes // 4096]
        return " ".join(str(f) for f in fields) + "\n"

    def fd_targets(self) -> dict[int, str]:
        process = self._process
        return {fd: process.vfs.fd_target(f) for fd, f in process.fds.items()}

    def meminfo_text(self) -> str:
        phys = self.kernel.phys
        total = phys.size // 1024
        free = phys.free_frames * 4
        rows = [
            ("MemTotal", total),
            ("MemFree", free),
            ("MemAvailable", free),
            ("Buffers", 0),
            ("Cached", 0),
            ("SwapTotal", 0),
            ("SwapFree", 0),
        ]
        return "".join(f"{key + ':':<16}{value:>8} kB\n" for key, value in rows)

    def cpuinfo_text(self) -> str:
        blocks = []
        model = self.kernel.machine.cpu_model
        flags = " ".join(self.kernel.machine.cpu_flags)
        for cpu in range(self.kernel.vcpu_count):
            blocks.append(
                f"processor\t: {cpu}\nvendor_id\t: {self.kernel.machine.cpu_vendor}\n"
                f"model name\t: {model}\nflags\t\t: {flags}\n\n"
            )
        return "".join(blocks)

    def hostname(self) -> str:
        return self.kernel.hostname
