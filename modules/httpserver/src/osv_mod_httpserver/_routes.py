"""OSv's REST route groups, answered from the running kernel's own state."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from osv_mod_httpserver import _guestfs
from osv_mod_httpserver._guestfs import check_path, locked

logger = logging.getLogger(__name__)

OS_NAME = "OSv"
VENDOR = "Cloudius Systems"
PAGE_SIZE = 4096
# Bits of CPUID leaf 1 (EDX, ECX) and leaf 7 (EBX), by the names Linux's
# /proc/cpuinfo gives them; the guest sees the CPUID the kernel set up.
CPUID_FLAGS = {
    (1, "edx"): {0: "fpu", 4: "tsc", 5: "msr", 6: "pae", 8: "cx8", 9: "apic",
                 11: "sep", 15: "cmov", 19: "clflush", 23: "mmx", 24: "fxsr",
                 25: "sse", 26: "sse2", 28: "ht"},
    (1, "ecx"): {0: "pni", 1: "pclmulqdq", 9: "ssse3", 12: "fma", 13: "cx16",
                 19: "sse4_1", 20: "sse4_2", 22: "movbe", 23: "popcnt",
                 25: "aes", 26: "xsave", 28: "avx", 29: "f16c", 30: "rdrand",
                 31: "hypervisor"},
    (7, "ebx"): {0: "fsgsbase", 3: "bmi1", 5: "avx2", 8: "bmi2", 9: "erms",
                 16: "avx512f", 18: "rdseed", 19: "adx", 29: "sha_ni"},
}  # fmt: skip

STRING = {"type": "string"}
INTEGER = {"type": "integer"}
EMPTY = {"type": "string", "enum": [""]}
THREAD = {
    "type": "object",
    "required": ["id", "cpu", "cpu_ms", "switches", "migrations", "preemptions",
                 "priority", "stack_size", "status", "name"],
    "properties": {
        "id": INTEGER, "cpu": INTEGER, "cpu_ms": INTEGER, "switches": INTEGER,
        "migrations": INTEGER, "preemptions": INTEGER, "priority": {"type": "number"},
        "stack_size": INTEGER, "status": STRING, "name": STRING,
    },
}  # fmt: skip
FILE_STATUS = {
    "type": "object",
    "required": ["accessTime", "modificationTime", "blockSize", "owner", "group",
                 "length", "pathSuffix", "permission", "replication", "symlink",
                 "type"],
    "properties": {
        "accessTime": INTEGER, "modificationTime": INTEGER, "blockSize": INTEGER,
        "owner": STRING, "group": STRING, "length": INTEGER, "pathSuffix": STRING,
        "permission": STRING, "replication": INTEGER, "symlink": STRING,
        "type": {"type": "string", "enum": ["FILE", "DIRECTORY", "SYMLINK"]},
    },
}  # fmt: skip
DF_STAT = {
    "type": "object",
    "required": ["filesystem", "mount", "btotal", "bfree", "ftotal", "ffree",
                 "blocksize"],
    "properties": {
        "filesystem": STRING, "mount": STRING, "btotal": INTEGER, "bfree": INTEGER,
        "ftotal": INTEGER, "ffree": INTEGER, "blocksize": INTEGER,
    },
}  # fmt: skip


class NotSupported(Exception):  # noqa: N818 - named for the HTTP answer, 501
    """The kernel has no subsystem to serve this route (answered with 501)."""


@dataclass(frozen=True)
class RawBody:
    """A response that is not JSON: bytes sent as they are (file content)."""

    data: bytes
    content_type: str = "application/octet-stream"


def operation(
    summary: str,
    returns: dict | None = None,
    query: tuple = (),
    path: str | None = None,
    body: dict | None = None,
    raw: bool = False,
) -> dict:
    """An OpenAPI 3 operation object for one route.

    ``query`` holds (name, required, schema) triples; ``path`` names the
    route's path parameter; ``body`` is a form's schema (urlencoded).
    """
    parameters = [
        {"name": name, "in": "query", "required": required, "schema": schema}
        for name, required, schema in query
    ]
    if path is not None:
        parameters.append(
            {"name": path, "in": "path", "required": True, "schema": STRING}
        )
    content = (
        {"application/octet-stream": {"schema": {"type": "string"}}}
        if raw
        else {"application/json": {"schema": returns or {}}}
    )
    spec: dict = {
        "summary": summary,
        "parameters": parameters,
        "responses": {"200": {"description": summary, "content": content}},
    }
    if body is not None:
        spec["requestBody"] = {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": body}},
        }
    return spec


def _bool(params: dict[str, str], name: str) -> bool:
    """OSv's query booleans: "", false, 0 are false; true, 1 are true."""
    value = params.get(name, "").lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise ValueError(f"Parameter '{name}' must be true or false, not {value!r}")


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name, "")
    if value == "":
        raise ValueError(f"Missing mandatory parameter '{name}'")
    return value


class OsRoutes:
    """Every group of OSv's API, bound to one kernel."""

    def __init__(self, kernel, server_stop=None) -> None:  # noqa: ANN001
        self.kernel = kernel
        # Set by the server once it runs: how /api/stop stops it.
        self.server_stop = server_stop

    # ---- /os ------------------------------------------------------------------

    def uptime(self, params: dict[str, str]) -> int:
        return (time.monotonic_ns() - self.kernel.boot_ns) // 1_000_000_000

    def date(self, params: dict[str, str]) -> str:
        # The guest has no time zone database: its local time is UTC.
        return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())

    def memory_total(self, params: dict[str, str]) -> int:
        return self.kernel.phys.total_frames * PAGE_SIZE

    def memory_free(self, params: dict[str, str]) -> int:
        return self.kernel.phys.free_frames * PAGE_SIZE

    def dmesg(self, params: dict[str, str]) -> str:
        lines = list(self.kernel.dmesg)
        return "".join(f"{line}\n" for line in lines)

    def set_hostname(self, params: dict[str, str]) -> str:
        name = _required(params, "name")
        if len(name.encode()) > 64:
            raise ValueError("host name longer than 64 bytes")
        with locked():
            self.kernel.hostname = name
        return ""

    def threads(self, params: dict[str, str]) -> dict:
        process = self.kernel.current
        tasks = list(process.tasks) if process is not None else []
        name = os.path.basename(process.exe) if process is not None else ""
        return {
            "list": [
                self._thread(task, index, name) for index, task in enumerate(tasks)
            ],
            "time_ms": time.time_ns() // 1_000_000,
        }

    def _thread(self, task, index: int, name: str) -> dict:  # noqa: ANN001
        # Each guest thread is a vCPU run by one host thread; that thread's
        # CPU clock counts the time the guest ran on it and the kernel's work
        # for its system calls. The main thread runs on the thread that
        # booted the kernel.
        host = task.thread or threading.main_thread()
        cpu_ns = 0
        counters = {"voluntary_ctxt_switches": 0, "nonvoluntary_ctxt_switches": 0}
        state = "?"
        if host.ident is not None and host.is_alive():
            try:
                cpu_ns = time.clock_gettime_ns(time.pthread_getcpuclockid(host.ident))
            except OSError:
                pass
            counters, state = _host_thread_counters(host.native_id)
        return {
            "id": task.tid,
            "cpu": index,
            "cpu_ms": cpu_ns // 1_000_000,
            "switches": counters["voluntary_ctxt_switches"]
            + counters["nonvoluntary_ctxt_switches"],
            "migrations": counters.get("nr_migrations", 0),
            "preemptions": counters["nonvoluntary_ctxt_switches"],
            "priority": 1.0,
            "stack_size": 8 << 20,
            "status": {"R": "running", "S": "waiting", "D": "waiting"}.get(
                state, "unknown"
            ),
            "name": name,
        }

    def cmdline(self, params: dict[str, str]) -> str:
        from osv_mod_httpserver._config import boot_cmdline

        return boot_cmdline(self.kernel)

    def set_cmdline(self, params: dict[str, str]) -> str:
        text = _required(params, "cmdline")
        if len(text) >= 1024:
            raise ValueError("command line too long")
        store_cmdline(self.kernel, text)
        return text

    def shutdown(self, params: dict[str, str]) -> str:
        """End the program; `osv run` then shuts the VM down and exits."""
        stop_program(self.kernel)
        return ""

    def reboot(self, params: dict[str, str]) -> str:
        """End the programs; `osv run` then boots the image again."""
        self.kernel.reboot()
        return ""

    # ---- /env -----------------------------------------------------------------

    def _environment(self) -> list[str]:
        # OSv's environment is the kernel's, shared by the programs it runs.
        # Here it is what the boot gave (--env, OSV_*) and what POST /env
        # changed: programs launched afterwards (PUT /app) start with it. A
        # running program keeps the copy it started with, in its own memory.
        environment = getattr(self.kernel, "environment", None)
        if environment is None:
            process = self.kernel.current
            return list(process.envp) if process is not None else []
        return [f"{key}={value}" for key, value in environment.items()]

    def env_list(self, params: dict[str, str]) -> list[str]:
        return self._environment()

    def env_get(self, params: dict[str, str]) -> str:
        name = params["var"].lstrip("/")
        for entry in self._environment():
            key, _, value = entry.partition("=")
            if key == name:
                return value
        raise ValueError(f"No environment variable {name}")

    def env_change(self, params: dict[str, str]) -> str:
        name = params["var"].lstrip("/")
        if not name or "=" in name:
            raise ValueError(f"Bad environment variable name {name!r}")
        value = _required(params, "val")
        with locked():
            self.kernel.environment[name] = value
        return ""

    def env_delete(self, params: dict[str, str]) -> str:
        name = params["var"].lstrip("/")
        with locked():
            if self.kernel.environment.pop(name, None) is None:
                raise LookupError(f"No environment variable {name}")
        return ""

    # ---- /file ----------------------------------------------------------------

    def file_get(self, params: dict[str, str]) -> object:
        path = check_path(params["path"])
        op = _required(params, "op")
        vfs = self.kernel.vfs
        with locked():
            if op == "GET":
                return RawBody(_guestfs.read_file(vfs, path))
            if op == "GETFILESTATUS":
                return _guestfs.file_status(vfs, path)
            if op == "LISTSTATUS":
                return _guestfs.list_status(vfs, path)
        raise ValueError(f"Parameter 'op' must be GET, GETFILESTATUS or LISTSTATUS, not {op!r}")  # fmt: skip

    def file_delete(self, params: dict[str, str]) -> str:
        path = check_path(params["path"])
        op = _required(params, "op")
        if op != "DELETE":
            raise ValueError(f"Parameter 'op' must be DELETE, not {op!r}")
        recursive = _bool(params, "recursive")
        with locked():
            _guestfs.remove(self.kernel.vfs, path, recursive)
        return ""

    def file_put(self, params: dict[str, str]) -> str:
        path = check_path(params["path"])
        op = _required(params, "op")
        permission = params.get("permission") or "777"
        try:
            mode = int(permission, 8)
        except ValueError:
            raise ValueError(f"Parameter 'permission' is not octal: {permission!r}") from None  # fmt: skip
        if not 0 <= mode <= 0o7777:
            raise ValueError(f"Parameter 'permission' out of range: {permission!r}")
        vfs = self.kernel.vfs
        with locked():
            if op == "MKDIRS":
                _guestfs.make_dirs(vfs, path, mode)
            elif op in ("RENAME", "COPY"):
                destination = check_path(_required(params, "destination"))
                if op == "RENAME":
                    vfs.rename(path, destination)
                else:
                    _guestfs.copy(vfs, path, destination)
                path = destination
            elif op == "WRITE":
                content = params.get("content", "")
                append = not _bool(params, "overwrite")
                _guestfs.write_file(vfs, path, content.encode(), append=append, mode=mode)  # fmt: skip
            else:
                raise ValueError(
                    f"Parameter 'op' must be MKDIRS, RENAME, COPY or WRITE, not {op!r}"
                )
            if "permission" in params:
                vfs.chmod(path, mode)
        return ""

    def file_upload(self, params: dict[str, str], files: dict[str, bytes]) -> str:
        path = check_path(params["path"])
        if "file" not in files:
            raise ValueError("Missing mandatory form field 'file'")
        directory, name = os.path.split(path)
        temporary = os.path.join(directory, f".{name}.upload")
        vfs = self.kernel.vfs
        # Written under another name first and renamed when complete, so the
        # guest never sees half a file at the final path.
        with locked():
            _guestfs.write_file(vfs, temporary, files["file"], append=False, mode=0o666)
            vfs.rename(temporary, path)
        return ""

    # ---- /fs ------------------------------------------------------------------

    def df(self, params: dict[str, str]) -> list[dict]:
        wanted = params.get("mount")
        with locked():
            mounts = list(self.kernel.vfs.mounts())
            if wanted is not None:
                mounts = [m for m in mounts if m.mountpoint == wanted]
                if not mounts:
                    raise LookupError("mount does not exist")
            return [_df_stat(mount) for mount in mounts]

    # ---- /hardware ------------------------------------------------------------

    def cpu_flags(self, params: dict[str, str]) -> str:
        machine = self.kernel.machine
        table = machine.cpuid
        found = []
        for entry in table.entries[: table.nent]:
            if entry.index != 0:
                continue
            for register in ("eax", "ebx", "ecx", "edx"):
                names = CPUID_FLAGS.get((entry.function, register), {})
                value = getattr(entry, register)
                found += [
                    name for bit, name in sorted(names.items()) if value >> bit & 1
                ]
        return " ".join(found)

    def cpu_count(self, params: dict[str, str]) -> int:
        return self.kernel.vcpu_count

    def firmware_vendor(self, params: dict[str, str]) -> str:
        # The kernel loads the program into the VM itself: no BIOS, no UEFI.
        return "none"

    def hypervisor(self, params: dict[str, str]) -> str:
        return "kvm"

    # ---- /network ---------------------------------------------------------------

    def interfaces(self, params: dict[str, str]) -> list:
        # No network module is loaded: the VM has no interface at all.
        return []

    def interface(self, params: dict[str, str]) -> dict:
        raise LookupError(f"Interface {params['intf'].lstrip('/')} not found")

    def routes(self, params: dict[str, str]) -> list:
        return []

    # ---- /app -----------------------------------------------------------------

    def app_run(self, params: dict[str, str]) -> str:
        """Launch a command line beside the running program; its thread id."""
        from osv._kernel import KernelError
        from osv.boot import CommandLineError, parse_command_line

        command = _required(params, "command")
        if ";" in command:
            raise ValueError("The use of ; is not allowed, use & for multiple commands")
        _bool(params, "new_program")
        kernel = self.kernel
        environment = dict(getattr(kernel, "environment", {}) or {})
        try:
            commands = parse_command_line(command, environment)
        except CommandLineError as error:
            raise ValueError(f"Failed to parse command line: {error}") from None
        if not commands:
            raise ValueError("The command line is empty")
        envp = [f"{key}={value}" for key, value in environment.items()]
        launched = []
        with locked():
            for each in commands:
                try:
                    launched.append(
                        kernel.spawn(each.argv, envp, "/", kernel.console_files())
                    )
                except KernelError as error:
                    raise ValueError(str(error)) from None
        for process in launched:
            kernel.start(process)
        return str(launched[0].pid)

    def app_finished(self, params: dict[str, str]) -> str:
        try:
            tid = int(_required(params, "tid"))
        except ValueError as error:
            raise ValueError(f"Parameter 'tid' is not a number: {error}") from None
        running = any(
            task.tid == tid and not process.ended.is_set()
            for process in self.kernel.processes
            for task in process.tasks
        )
        return "0" if running else "1"

    # ---- /api -----------------------------------------------------------------

    def stop(self, params: dict[str, str]) -> str:
        if self.server_stop is None:
            raise NotSupported("this server cannot be stopped from a request")
        self.server_stop()
        return ""

    # ---- /trace ---------------------------------------------------------------

    def trace(self, params: dict[str, str]) -> object:
        # No tracepoint subsystem exists: the group is not found, as a route
        # of a module that is not in the image would not be.
        raise LookupError("tracing is not available: the kernel has no tracepoints")


def _host_thread_counters(native_id: int | None) -> tuple[dict[str, int], str]:
    """Context-switch counters and the state of one host thread, from /proc."""
    counters = {"voluntary_ctxt_switches": 0, "nonvoluntary_ctxt_switches": 0}
    state = "?"
    if native_id is None:
        return counters, state
    base = f"/proc/self/task/{native_id}"
    try:
        with open(f"{base}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in counters:
                    counters[key] = int(value)
                elif key == "State":
                    state = value.strip()[:1]
    except OSError:
        return counters, state
    try:
        with open(f"{base}/sched") as sched:
            for line in sched:
                key, _, value = line.partition(":")
                if key.strip() == "se.nr_migrations":
                    counters["nr_migrations"] = int(value)
    except (OSError, ValueError):
        pass  # only kernels built with scheduler debugging have this file
    return counters, state


def _df_stat(mount) -> dict:  # noqa: ANN001
    st = mount.statfs()
    return {
        "filesystem": mount.device,
        "mount": mount.mountpoint,
        "btotal": st.f_blocks,
        "bfree": st.f_bfree,
        "ftotal": st.f_files,
        "ffree": st.f_ffree,
        "blocksize": st.f_frsize or st.f_bsize,
    }


def stop_program(kernel) -> None:  # noqa: ANN001
    """End the running programs as exit(0) would, from a host thread."""
    if kernel.current is None:
        raise NotSupported("no program is running yet")
    # Kernel.stop ends every program, cuts its sleeps and waits short, and
    # interrupts the vCPUs inside KVM_RUN; later commands do not start.
    kernel.stop(0)


def store_cmdline(kernel, text: str) -> None:  # noqa: ANN001
    """Persist the next boot's command line into the image, as OSv does."""
    from osv.image import DiskImage, ImageError

    disk = (getattr(kernel, "block_devices", None) or {}).get("vblk0")
    if disk is None:
        raise NotSupported("the kernel has no boot disk to store the command line on")
    try:
        if not disk.readonly:
            disk.write(512, text.encode() + b"\0")
            disk.flush()
            return
        # The boot opened the disk read-only; the image file is reopened for
        # writing. Both go through the block layer, so qcow2 works too.
        path = getattr(disk, "path", None)
        if path is None:
            raise NotSupported("the boot disk is read-only and has no image file")
        image = DiskImage.open(path, writable=True)
        try:
            image.set_cmdline(text)
        finally:
            image.close()
    except ImageError as error:
        raise ValueError(str(error)) from None
    logger.info("boot command line stored: %s", text)


def route_table(r: OsRoutes, flavour: str) -> list[tuple]:
    """The hook entries for OSv's groups: (method, path, handler, operation)."""
    env_list = {"type": "array", "items": STRING}
    status_list = {"type": "array", "items": FILE_STATUS}
    df_list = {"type": "array", "items": DF_STAT}
    threads = {
        "type": "object",
        "required": ["list", "time_ms"],
        "properties": {"list": {"type": "array", "items": THREAD}, "time_ms": INTEGER},
    }
    version = r.kernel.version

    def constant(value):  # noqa: ANN001, ANN202
        return lambda params: value

    op_query = ("op", True, {"type": "string"})
    table = [
        ("GET", "/os/name", constant(OS_NAME), operation("OS name", STRING)),
        ("GET", "/os/version", constant(version), operation("OS version", STRING)),
        ("GET", "/os/vendor", constant(VENDOR), operation("OS vendor", STRING)),
        ("GET", "/os/uptime", r.uptime, operation("Seconds since boot", INTEGER)),
        ("GET", "/os/date", r.date, operation("Current date and time", STRING)),
        ("GET", "/os/memory/total", r.memory_total, operation("Guest memory in bytes", INTEGER)),
        ("GET", "/os/memory/free", r.memory_free, operation("Free guest memory in bytes", INTEGER)),
        ("GET", "/os/memory/balloon", constant(0), operation("Memory balloon size (no balloon: 0)", INTEGER)),
        ("GET", "/os/dmesg", r.dmesg, operation("Kernel log buffer", STRING)),
        ("GET", "/os/hostname", lambda params: r.kernel.hostname, operation("Host name", STRING)),
        ("POST", "/os/hostname", r.set_hostname, operation("Set the host name", EMPTY, query=(("name", True, STRING),))),
        ("GET", "/os/threads", r.threads, operation("Guest threads", threads)),
        ("GET", "/os/cmdline", r.cmdline, operation("Boot command line", STRING)),
        ("POST", "/os/cmdline", r.set_cmdline, operation("Store the next boot's command line", STRING, query=(("cmdline", True, STRING),))),
        ("POST", "/os/poweroff", r.shutdown, operation("Power off", EMPTY)),
        ("POST", "/os/shutdown", r.shutdown, operation("Shut down", EMPTY)),
        ("POST", "/os/reboot", r.reboot, operation("Reboot: end the programs and boot the image again", EMPTY)),
        ("GET", "/env/", r.env_list, operation("The application's environment", env_list)),
        ("GET", "/env/{var}", r.env_get, operation("One environment variable", STRING, path="var")),
        ("POST", "/env/{var}", r.env_change, operation("Set a variable for programs launched from now on", EMPTY, path="var", query=(("val", True, STRING),))),
        ("DELETE", "/env/{var}", r.env_delete, operation("Unset a variable for programs launched from now on", EMPTY, path="var")),
        ("GET", "/file/{path}", r.file_get, operation("Read a guest file, its status or a directory listing", {}, path="path", query=(op_query, ("offset", False, INTEGER), ("length", False, INTEGER)))),
        ("DELETE", "/file/{path}", r.file_delete, operation("Delete a guest file or directory", EMPTY, path="path", query=(op_query, ("recursive", False, STRING)))),
        ("PUT", "/file/{path}", r.file_put, operation("Make directories, rename, copy or write a guest file", EMPTY, path="path", query=(op_query, ("destination", False, STRING), ("content", False, STRING), ("overwrite", False, STRING), ("permission", False, STRING), ("createParent", False, STRING)))),
        ("POST", "/file/{path}", r.file_upload, operation("Upload a guest file (multipart field 'file')", EMPTY, path="path")),
        ("GET", "/fs/df/", r.df, operation("Usage of every mounted file system", df_list)),
        ("GET", "/fs/df/{mount}", r.df, operation("Usage of one mounted file system", df_list, path="mount")),
        ("GET", "/hardware/processor/flags", r.cpu_flags, operation("CPU feature flags", STRING)),
        ("GET", "/hardware/processor/count", r.cpu_count, operation("Number of vCPUs", INTEGER)),
        ("GET", "/hardware/firmware/vendor", r.firmware_vendor, operation("Firmware vendor", STRING)),
        ("GET", "/hardware/hypervisor", r.hypervisor, operation("Hypervisor", STRING)),
        ("GET", "/network/ifconfig/", r.interfaces, operation("Network interfaces", {"type": "array"})),
        ("GET", "/network/ifconfig/{intf}", r.interface, operation("One network interface", {"type": "object"}, path="intf")),
        ("GET", "/network/route/", r.routes, operation("Routing table", {"type": "array"})),
        ("PUT", "/app/", r.app_run, operation("Launch a command beside the running program; its thread id", STRING, query=(("command", True, STRING), ("new_program", False, STRING)))),
        ("GET", "/app/finished", r.app_finished, operation("Whether a thread has finished", {"type": "string", "enum": ["0", "1"]}, query=(("tid", True, INTEGER),))),
        ("POST", "/api/stop", r.stop, operation("Stop the REST server", EMPTY)),
        ("GET", "/trace/status", r.trace, operation("Tracepoints (not available)", {})),
        ("GET", "/trace/count", r.trace, operation("Tracepoint counters (not available)", {})),
    ]  # fmt: skip
    if flavour == "monitoring":
        table = [
            entry
            for entry in table
            if entry[0] == "GET" and entry[1] != "/app/finished"
        ]
        table = [entry for entry in table if not entry[1].startswith("/trace")]
    # op=GET answers the file's bytes, the other ops JSON.
    file_get = next(e[3] for e in table if e[:2] == ("GET", "/file/{path}"))
    file_get["responses"]["200"]["content"] = {
        "application/json": {"schema": {"oneOf": [FILE_STATUS, status_list]}},
        "application/octet-stream": {"schema": {"type": "string"}},
    }
    return table
