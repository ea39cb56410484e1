"""A warm ``osv`` process that runs ``osv run`` for clients: ``osv serve``.

Starting the interpreter and importing the kernel takes most of an
``osv run`` of a small program. ``osv serve`` pays that once: it imports the
kernel and every installed module, then listens on a Unix socket. ``osv run``
finds the socket, hands over its command line, working directory,
environment and its standard input, output and error, and the server forks a
child that runs the command exactly as ``osv run`` would in-process, writing
straight to the client's terminal or pipes. The client forwards the signals
it gets to that child and exits with the child's status. With no server (or
one of another version), ``osv run`` runs in-process as before.

This module is imported by every ``osv`` command before anything else, so the
client side uses only modules the interpreter has already loaded.
"""

from __future__ import annotations

import _signal as signal
import _socket
import os
import struct
import sys

# _signal and _socket rather than signal and socket: those wrap their
# constants in enum classes, and importing enum would cost the client more
# than the rest of its work.

# The socket: $OSV_SOCKET, else osv.sock in $XDG_RUNTIME_DIR (a directory
# only its user can enter), else /tmp/osv-UID/osv.sock in a directory made
# with mode 0700.
SOCKET_VARIABLE = "OSV_SOCKET"
# OSV_NO_SERVER=1 makes ``osv run`` run in-process even with a server up.
NO_SERVER_VARIABLE = "OSV_NO_SERVER"
SOCKET_NAME = "osv.sock"

# The protocol, on a stream socket:
#
#   client -> server   u32 length, then that many bytes: a sequence of
#                      fields, each u32 length + bytes: b"OSVRUN1", the
#                      client's osv version, its working directory, the
#                      signals it ignores (numbers, comma-separated), the
#                      number of arguments, the arguments, then one
#                      KEY=VALUE field per environment variable. The first
#                      bytes carry SCM_RIGHTS with the client's fds 0, 1, 2.
#   server -> client   b"P" + u32 pid of the child running the command, then
#                      b"S" + i32 exit status when it ends; or b"R" + u32
#                      length + a reason, when the server will not run it
#                      (the client then runs the command itself).
#
# A client that sees the connection end without a status reports that the
# run was lost.
MAGIC = b"OSVRUN1"
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
# A request larger than this is refused: command lines and environments are
# far smaller, and the server must not be made to buffer without bound.
MAX_REQUEST = 4 << 20

# Signals the client passes on to the child; what a terminal or a process
# manager sends to stop or notify a foreground program.
FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGWINCH,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


# How often the server collects the runs that ended, in milliseconds.
REAP_INTERVAL_MS = 500

# How often a client whose run waits in the background looks whether it
# has been brought back to the foreground.
HELD_POLL_SECONDS = 0.25

# Job-control stops the client applies to itself and to the run.
STOP_SIGNALS = (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


class ServerError(Exception):
    """``osv serve`` cannot start or go on (socket in use, bad directory)."""


def socket_path() -> str:
    """Where the server listens and clients look for it."""
    configured = os.environ.get(SOCKET_VARIABLE)
    if configured:
        return configured
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, SOCKET_NAME)
    return os.path.join(f"/tmp/osv-{os.getuid()}", SOCKET_NAME)


# ---------------------------------------------------------------------------
# The client side: what ``osv run`` does when a server is listening
# ---------------------------------------------------------------------------


def run_via_server(argv: list[str], version: str) -> int | None:
    """Have a server run ``osv ARGV``; its exit status, or None to run in-process.

    None when there is no server to reach (no socket, a stale one, a server
    of another version, OSV_NO_SERVER set): the caller then runs the command
    itself, so a server only ever makes ``osv run`` faster.
    """
    if os.environ.get(NO_SERVER_VARIABLE, "").strip().lower() in {"1", "true", "yes"}:
        return None
    # A switch read when the kernel's modules are imported cannot be changed
    # for an already warm server.
    if os.environ.get("OSV_DISABLE_CEXT", "").strip():
        return None
    # Started in the background of a terminal: in-process, where job
    # control applies as it does to any program. Decided before connecting,
    # so that no server forks a child for a request that never comes.
    if _in_background():
        return None
    path = socket_path()
    try:
        connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        try:
            connection.connect(path)
        except OSError:
            return None
        # Only a server of our own user gets our streams and environment:
        # anyone may create a socket where we look for one.
        if _peer(connection)[1] != os.getuid():
            return None
        return _converse(connection, argv, version)
    finally:
        connection.close()


def _peer(connection) -> tuple[int, int]:  # noqa: ANN001 - a socket of either module
    """The process id and user id at the other end of a Unix socket."""
    credentials = connection.getsockopt(
        _socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i")
    )
    pid, uid, _ = struct.unpack("3i", credentials)
    return pid, uid


def _in_background() -> bool:
    """Whether we are a background job of the terminal on our standard input.

    Such a job that reads its terminal is stopped by the kernel (SIGTTIN).
    A served run has a session of its own, where that rule cannot reach it,
    so it must not run while its client is in the background.
    """
    try:
        return os.isatty(0) and os.tcgetpgrp(0) != os.getpgrp()
    except OSError:
        return False


def _converse(connection: _socket.socket, argv: list[str], version: str) -> int | None:
    try:
        cwd = os.getcwd()
    except OSError:
        return None  # a removed working directory: let the command say so
    # What the client ignores the child ignores too (`nohup osv run` keeps
    # ignoring SIGHUP); the others it passes on.
    ignored = [s for s in FORWARDED_SIGNALS if signal.getsignal(s) == signal.SIG_IGN]
    fields = [
        MAGIC,
        version.encode(),
        os.fsencode(cwd),
        ",".join(str(int(s)) for s in ignored).encode(),
        str(len(argv)).encode(),
    ]
    fields += [os.fsencode(word) for word in argv]
    fields += [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in os.environ.items()]
    body = b"".join(_U32.pack(len(field)) + field for field in fields)
    request = _U32.pack(len(body)) + body
    descriptors = struct.pack("3i", 0, 1, 2)
    try:
        sent = connection.sendmsg(
            [request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, descriptors)]
        )
        if sent < len(request):
            connection.sendall(request[sent:])
    except OSError:
        return None  # a bad descriptor 0-2, or the server went away: run here

    reader = _Reader(connection)
    kind = reader.exactly(1)
    if kind == b"R":
        (length,) = _U32.unpack(reader.exactly(4))
        reader.exactly(length)
        return None
    if kind != b"P":
        return None  # the server ended before taking the command: run here
    (child,) = _U32.unpack(reader.exactly(4))

    forwarded: list[int] = []
    held: list[bool] = []

    def forward(signum: int, _frame: object) -> None:
        forwarded.append(signum)
        try:
            os.kill(child, signum)
            # A run held in the background must wake to take its signal.
            if held and signum != signal.SIGWINCH:
                os.kill(child, signal.SIGCONT)
        except ProcessLookupError:
            pass

    def stop(signum: int, _frame: object) -> None:
        # Ctrl-Z: the run stops with its client, as one process would.
        try:
            os.kill(child, signal.SIGSTOP)
        except ProcessLookupError:
            pass
        os.kill(os.getpid(), signal.SIGSTOP)
        # Continued: the run goes on too, unless it was sent to the
        # background (bg), where it could read what is typed to the shell;
        # there it waits until brought back (fg), as the loop below sees.
        if _in_background():
            if not held:
                sys.stderr.write(
                    "osv: a served run waits while it is in the background; "
                    "fg resumes it (OSV_NO_SERVER=1 runs in-process)\n"
                )
            held[:] = [True]
            return
        try:
            os.kill(child, signal.SIGCONT)
        except ProcessLookupError:
            pass

    for signum in FORWARDED_SIGNALS:
        if signum not in ignored:
            signal.signal(signum, forward)
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) != signal.SIG_IGN:
            signal.signal(signum, stop)
    # The wait wakes up now and then: a shell's `fg` on a job that runs in
    # the background sends no signal, so only a look at the terminal tells
    # that a held run may go on.
    connection.settimeout(HELD_POLL_SECONDS)
    while True:
        try:
            kind = reader.exactly(1, raise_timeout=True)
        except TimeoutError:
            if held and not _in_background():
                del held[:]
                try:
                    os.kill(child, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            continue
        break
    connection.settimeout(None)
    if kind == b"S":
        return _I32.unpack(reader.exactly(4))[0]
    # The child ended without a status: killed by a signal we passed on, or
    # by something else. End as the in-process command would have.
    fatal = [s for s in forwarded if s not in (signal.SIGWINCH, signal.SIGINT)]
    if fatal:
        signal.signal(fatal[-1], signal.SIG_DFL)
        os.kill(os.getpid(), fatal[-1])
    sys.stderr.write("osv: error: the server's run ended without an exit status\n")
    return 1


class _Reader:
    """Exact-length reads from a stream socket; b"" pieces once it has ended."""

    def __init__(self, connection: _socket.socket) -> None:
        self.connection = connection

    def exactly(self, size: int, raise_timeout: bool = False) -> bytes:
        """``size`` bytes, or b"" at the end; TimeoutError only if asked for."""
        data = b""
        while len(data) < size:
            try:
                chunk = self.connection.recv(size - len(data))
            except TimeoutError:
                if raise_timeout and not data:
                    raise
                continue
            except OSError:
                return b""
            if not chunk:
                return b""
            data += chunk
        return data


# ---------------------------------------------------------------------------
# The server side: ``osv serve``
# ---------------------------------------------------------------------------


def serve(path: str, version: str, ready=None) -> None:  # noqa: ANN001
    """Listen on ``path`` until SIGTERM, SIGINT or SIGHUP; fork a child per client.

    ``ready``, when given, is called once the socket accepts connections.
    """
    import logging
    import select

    logger = logging.getLogger(__name__)
    _prepare_directory(path)
    listener = _bind(path)
    stop = []

    def request_stop(signum: int, _frame: object) -> None:
        stop.append(signum)
        listener.close()

    # SIGHUP too: the terminal that started `osv serve &` went away.
    previous = {
        signum: signal.signal(signum, request_stop)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    # The runs are reaped below, which an inherited SIG_IGN would prevent.
    previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if ready is not None:
        ready()
    # Besides new clients, the server watches each client's end of its
    # connection: a client killed outright while its run is stopped (Ctrl-Z,
    # then SIGKILL) leaves a run that cannot notice by itself, so the server
    # wakes it with SIGCONT, and it then sees the client gone and ends. The
    # server's copy of a connection is closed as soon as its run ends (the
    # children are reaped below), so that a client whose run dies without a
    # status sees the connection end.
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    clients: dict[int, tuple[object, int]] = {}
    try:
        while not stop:
            events = poller.poll(REAP_INTERVAL_MS)
            _reap(clients, poller)
            for fd, _ in events:
                if stop:
                    break
                if fd in clients:
                    connection, pid = clients.pop(fd)
                    poller.unregister(fd)
                    connection.close()
                    try:
                        os.kill(pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
                    continue
                try:
                    connection, _ = listener.accept()
                except OSError:
                    if stop:
                        break
                    raise
                # The request is read in the child: a client that connects
                # and sends nothing holds up only its own child.
                try:
                    pid = os.fork()
                    if pid == 0:
                        for other, _ in clients.values():
                            other.close()
                        _serve_one(connection, listener, version, logger)
                except BaseException:
                    connection.close()
                    raise
                clients[connection.fileno()] = (connection, pid)
                poller.register(connection, select.POLLRDHUP)
    finally:
        for connection, _ in clients.values():
            connection.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        listener.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        logger.info("stopped serving on %s", path)


def _reap(clients: dict, poller) -> None:  # noqa: ANN001
    """Collect the runs that ended; drop the server's copy of their connections."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        for fd, (connection, child) in list(clients.items()):
            if child == pid:
                del clients[fd]
                poller.unregister(fd)
                connection.close()


def _prepare_directory(path: str) -> None:
    """Make the socket's directory (mode 0700) unless it exists and is ours."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as error:
        raise ServerError(f"cannot make {directory}: {_reason(error)}") from None
    info = os.stat(directory)
    if info.st_uid != os.getuid():
        raise ServerError(f"{directory} belongs to another user")
    if info.st_mode & 0o022:
        raise ServerError(f"{directory} can be written by other users")


def _bind(path: str):  # noqa: ANN202 - a socket.socket
    """A listening socket at ``path``, replacing a stale one, never a live one."""
    import socket
    import stat

    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ServerError(f"{path} exists and is not a socket")
    except FileNotFoundError:
        pass
    except OSError as error:
        raise ServerError(f"cannot use {path}: {_reason(error)}") from None
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    except OSError as error:
        raise ServerError(f"cannot use {path}: {_reason(error)}") from None
    else:
        raise ServerError(f"another osv server is already serving on {path}")
    finally:
        probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_mask = os.umask(0o077)
        try:
            listener.bind(path)
        finally:
            os.umask(old_mask)
        listener.listen(16)
    except OSError as error:
        listener.close()
        raise ServerError(f"cannot listen on {path}: {_reason(error)}") from None
    return listener


def _reason(error: OSError) -> str:
    """An OSError's message without its errno and path (some have no strerror)."""
    return error.strerror or str(error)


def _serve_one(connection, listener, version: str, logger) -> None:  # noqa: ANN001
    """In a child forked for one client: check its request, then run it."""
    try:
        listener.close()
        # A session of its own: the client's terminal is then not this
        # process's controlling terminal, so reading it never stops the run
        # with SIGTTIN (the server may sit in a background job of that very
        # terminal), and a Ctrl-C meant for the server does not reach it.
        os.setsid()
        client, uid = _peer(connection)
        if uid != os.getuid():
            _refuse(connection, "the server serves only its own user")
            os._exit(0)
        connection.settimeout(10)
        try:
            fields, descriptors = _receive_request(connection)
        except (OSError, ValueError) as error:
            _refuse(connection, f"bad request: {error}")
            os._exit(0)
        if len(descriptors) != 3 or fields[0] != MAGIC:
            _refuse(connection, "bad request")
            os._exit(0)
        if fields[1].decode(errors="replace") != version:
            logger.info("client %d of another version turned away", client)
            _refuse(connection, f"the server runs osv-core {version}")
            os._exit(0)
        connection.settimeout(None)
        logger.info("process %d runs osv run for client %d", os.getpid(), client)
    except BaseException:  # noqa: BLE001 - a child never returns to accept()
        os._exit(1)
    _child(connection, fields, descriptors)


def _receive_request(connection) -> tuple[list[bytes], list[int]]:  # noqa: ANN001
    descriptors: list[int] = []
    data = b""
    size = None
    while size is None or len(data) < size + 4:
        want = 65536 if size is None else size + 4 - len(data)
        chunk, ancillary, _, _ = connection.recvmsg(
            min(want, 65536), _socket.CMSG_SPACE(struct.calcsize("3i"))
        )
        for level, kind, payload in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                count = len(payload) // 4
                descriptors += struct.unpack(f"{count}i", payload[: count * 4])
        if not chunk:
            for descriptor in descriptors:
                os.close(descriptor)
            raise ValueError("the client went away")
        data += chunk
        if size is None and len(data) >= 4:
            (size,) = _U32.unpack_from(data)
            if size > MAX_REQUEST:
                for descriptor in descriptors:
                    os.close(descriptor)
                raise ValueError(f"{size} bytes is too large")
    fields = []
    position = 4
    while position < len(data):
        (length,) = _U32.unpack_from(data, position)
        position += 4
        fields.append(data[position : position + length])
        position += length
    if len(fields) < 5:
        raise ValueError("too few fields")
    return fields, descriptors


def _refuse(connection, reason: str) -> None:  # noqa: ANN001
    encoded = reason.encode()
    try:
        connection.sendall(b"R" + _U32.pack(len(encoded)) + encoded)
    except OSError:
        pass


def _child(connection, fields, descriptors) -> None:  # noqa: ANN001
    """In the forked child: become the client's ``osv`` process and run."""
    status = 1
    try:
        # The dispositions of a fresh `osv` process started by the client,
        # whatever the server itself inherited or set.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        ignored = {int(n) for n in fields[3].split(b",") if n}
        for signum in FORWARDED_SIGNALS:
            if signum in ignored:
                signal.signal(signum, signal.SIG_IGN)
            elif signum == signal.SIGINT:
                signal.signal(signum, signal.default_int_handler)
            else:
                signal.signal(signum, signal.SIG_DFL)
        import fcntl

        # Above 2 first: a received descriptor may itself be 0, 1 or 2 when
        # the server was started with some of those closed.
        high = [fcntl.fcntl(d, fcntl.F_DUPFD_CLOEXEC, 3) for d in descriptors]
        for descriptor in descriptors:
            os.close(descriptor)
        for target, descriptor in enumerate(high):
            os.dup2(descriptor, target)
            os.close(descriptor)
        argc = int(fields[4])
        argv = [os.fsdecode(word) for word in fields[5 : 5 + argc]]
        environment = {}
        for entry in fields[5 + argc :]:
            key, _, value = entry.partition(b"=")
            environment[os.fsdecode(key)] = os.fsdecode(value)
        os.environ.clear()
        os.environ.update(environment)
        _reopen_standard_streams(bool(environment.get("PYTHONUNBUFFERED")))
        os.chdir(os.fsdecode(fields[2]))
        connection.sendall(b"P" + _U32.pack(os.getpid()))
        _end_with_the_client(connection)

        import logging

        # The command configures logging for the client's stderr afresh.
        root = logging.getLogger()
        for handler in root.handlers[:]:
            root.removeHandler(handler)

        from osv.cli import main

        try:
            status = main(argv)
        except SystemExit as exit_:
            # As the interpreter ends on SystemExit: argparse's usage errors
            # (2) and --help (0) among them.
            status = _exit_status(exit_.code)
        sys.stdout.flush()
        sys.stderr.flush()
    except KeyboardInterrupt:
        status = 130
    except BaseException as error:  # noqa: BLE001 - the child must always end here
        try:
            sys.stderr.write(f"osv: internal error: {type(error).__name__}: {error}\n")
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001, S110 - nothing left to report on
            pass
    finally:
        try:
            connection.sendall(b"S" + _I32.pack(status))
        except BaseException:  # noqa: BLE001, S110 - the client has gone
            pass
        # Straight out: the server's interpreter state (its atexit handlers,
        # its half of every object) is not this process's to finalize.
        os._exit(0)


def _exit_status(code: object) -> int:
    """The status the interpreter would exit with for ``SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write(f"{code}\n")
    return 1


def _end_with_the_client(connection) -> None:  # noqa: ANN001
    """End this process as soon as the client's end of the socket closes.

    A client never writes after its request, so the only thing a read can
    see is the end: the client was killed (SIGKILL cannot be passed on), and
    its run must not go on without anyone to report to.
    """
    import threading

    def watch() -> None:
        try:
            while connection.recv(1):
                pass
        except OSError:
            pass
        os._exit(128 + 9)

    threading.Thread(target=watch, name="osv-client-watch", daemon=True).start()


def _reopen_standard_streams(unbuffered: bool) -> None:
    """New sys.stdin/stdout/stderr on fds 0-2, as the interpreter makes them.

    So that writing behaves as in a fresh ``osv`` process of the client: a
    full or broken stdout fails the same write (``unbuffered`` is the
    client's PYTHONUNBUFFERED), and a terminal is line-buffered.
    """
    import io

    def stream(fd: int, mode: str) -> io.TextIOWrapper:
        writing = mode == "w"
        raw = unbuffered and writing
        binary = open(fd, mode + "b", buffering=0 if raw else -1, closefd=False)  # noqa: SIM115
        return io.TextIOWrapper(
            binary,
            encoding="utf-8",
            errors="surrogateescape" if fd < 2 else "backslashreplace",
            line_buffering=not raw and (os.isatty(fd) or fd == 2),
            write_through=raw,
        )

    sys.stdin = sys.__stdin__ = stream(0, "r")
    sys.stdout = sys.__stdout__ = stream(1, "w")
    sys.stderr = sys.__stderr__ = stream(2, "w")


def warm_up() -> None:
    """Import what ``osv run`` needs, so that each child starts with it loaded."""
    import osv._cmd_run  # noqa: F401
    import osv.cli  # noqa: F401
    from osv import _plugins
    from osv.boot._sequence import _import_kernel

    _import_kernel()
    # Every installed module, so that an image naming some finds them loaded.
    _plugins.load_modules()
