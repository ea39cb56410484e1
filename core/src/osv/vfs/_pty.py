"""Pseudo-terminals: /dev/ptmx hands out pty pairs, /dev/pts holds their slaves.

Each end runs a line discipline that behaves as Linux's N_TTY does.
"""

# How a pty works here, and why it is shaped like Linux's.
#
# A pair has two terminal ends, the master (what a terminal emulator holds)
# and the slave (what the program under it sees). Each end has its own
# termios and its own line discipline; bytes written on one end go through
# the writer's output processing (OPOST, ONLCR, ...) into the other end's
# input queue, where that end's discipline processes them (ICRNL, ICANON
# line editing, ECHO, ISIG, IXON) into the buffer its reader drains. Echoes
# produced while the slave processes its input travel back the same way, so
# the master reads them. The master's termios is fixed raw, as on Linux,
# because the termios and window-size ioctls on a master act on the slave.
#
# The two queues keep Linux's sizes, since programs can observe them: an
# input queue of 8 KiB that writers fill (the tty "flip" buffer) and a
# processed buffer of 4 KiB that readers drain (N_TTY's read buffer). Linux
# moves queued input through the discipline from a worker that runs just
# after each write; here `PtyPair.settle` does that at the end of every
# operation. The order is visible: echoes of a batch of input sit in the
# master's queue until the batch is done, so an interrupt character later
# in the same batch flushes them, as on Linux.
#
# Lifetime follows pty.c and devpts: /dev/ptmx allocates the lowest free
# index; the slave is locked until TIOCSPTLCK(0); /dev/pts/N disappears when
# the master closes, and then every open slave is hung up (reads give end of
# file, writes EIO). When the last slave closes, the master reads what is
# left and then EIO. The index is free again once both ends are closed.
#
# Locking: every operation on a pair holds its condition variable, and the
# ones that may wait do so inside `blocking()`, which first gives up the
# kernel lock, in the order that lock's rationale asks for. A signal to
# handle ends such a wait as on Linux (see _signals): the call returns what
# it moved, or fails with EINTR and starts again under SA_RESTART.
#
# Signals: the slave can be the controlling terminal of the program's
# session (DevPts records which program). Its foreground process group is
# that program, so the signals Linux sends the group (ISIG's SIGINT,
# SIGQUIT and SIGTSTP, SIGWINCH on a resize, TIOCSIG's) and the session
# leader (SIGHUP and SIGCONT when the master hangs up) go to it, with
# si_code SI_KERNEL as the kernel's own. Sending needs the kernel lock,
# which a waiting operation has given up, and calls the wakers of threads
# that may wait on this very pair, so the discipline only notes the signals
# it raises (`PtyPair.raised`) and each file operation sends them once it
# has left the pair's lock.
#
# Left out: packet mode (TIOCPKT), TIOCSTI, termios2 and the other line
# disciplines, EXTPROC, and job control proper: a unikernel cannot stop its
# program, so SIGTSTP does nothing unless the program catches it, and the
# session has a single process group.

from __future__ import annotations

import errno
import itertools
import logging
import re
import stat as statmod
import struct
import threading
import time
from collections.abc import Callable

from osv._record import Record
from osv.sched._lock import blocking
from osv.sched._task import Process

from ._abi import (
    DT_CHR,
    FIONREAD,
    O_ACCMODE,
    O_NOCTTY,
    O_NONBLOCK,
    O_WRONLY,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLOUT,
    POLLRDNORM,
    POLLWRNORM,
    TCGETS,
    TCSETS,
    TCSETSF,
    TCSETSW,
    TIOCGWINSZ,
    TIOCSWINSZ,
    makedev,
)
from ._devfs import DeviceVnode
from ._errors import FsError
from ._file import File, StreamFile
from ._signals import calling_process, interruption, send_from_terminal, wait
from ._vnode import Mount, Vnode

logger = logging.getLogger(__name__)

# ---- ioctl requests (include/uapi/asm-generic/ioctls.h) ---------------------

TCSBRK = 0x5409
TCXONC = 0x540A
TCFLSH = 0x540B
TIOCEXCL = 0x540C
TIOCNXCL = 0x540D
TIOCSCTTY = 0x540E
TIOCGPGRP = 0x540F
TIOCSPGRP = 0x5410
TIOCOUTQ = 0x5411
TIOCNOTTY = 0x5422
TCSBRKP = 0x5425
TIOCSBRK = 0x5427
TIOCCBRK = 0x5428
TIOCGSID = 0x5429
TIOCGPTN = 0x80045430  # _IOR('T', 0x30, unsigned int)
TIOCSPTLCK = 0x40045431  # _IOW('T', 0x31, int)
TIOCSIG = 0x40045436  # _IOW('T', 0x36, int), though the int is passed by value
TIOCGPTLCK = 0x80045439  # _IOR('T', 0x39, int)
TIOCGEXCL = 0x80045440  # _IOR('T', 0x40, int)
TIOCGPTPEER = 0x5441  # _IO('T', 0x41)

# tcflush and tcflow arguments.
TCIFLUSH = 0
TCOFLUSH = 1
TCIOFLUSH = 2
TCOOFF = 0
TCOON = 1
TCIOFF = 2
TCION = 3

# ---- termios (include/uapi/asm-generic/termbits*.h) -------------------------

# c_iflag
IGNBRK = 0o1
BRKINT = 0o2
IGNPAR = 0o4
PARMRK = 0o10
INPCK = 0o20
ISTRIP = 0o40
INLCR = 0o100
IGNCR = 0o200
ICRNL = 0o400
IUCLC = 0o1000
IXON = 0o2000
IXANY = 0o4000
IXOFF = 0o10000
IMAXBEL = 0o20000
IUTF8 = 0o40000
# c_oflag
OPOST = 0o1
OLCUC = 0o2
ONLCR = 0o4
OCRNL = 0o10
ONOCR = 0o20
ONLRET = 0o40
TABDLY = 0o14000
XTABS = 0o14000
# c_cflag
B38400 = 0o17
CSIZE = 0o60
CS8 = 0o60
CREAD = 0o200
PARENB = 0o400
# c_lflag
ISIG = 0o1
ICANON = 0o2
ECHO = 0o10
ECHOE = 0o20
ECHOK = 0o40
ECHONL = 0o100
NOFLSH = 0o200
TOSTOP = 0o400
ECHOCTL = 0o1000
ECHOPRT = 0o2000
ECHOKE = 0o4000
IEXTEN = 0o100000
EXTPROC = 0o200000
# c_cc indices
VINTR = 0
VQUIT = 1
VERASE = 2
VKILL = 3
VEOF = 4
VTIME = 5
VMIN = 6
VSWTC = 7
VSTART = 8
VSTOP = 9
VSUSP = 10
VEOL = 11
VREPRINT = 12
VDISCARD = 13
VWERASE = 14
VLNEXT = 15
VEOL2 = 16
NCCS = 19

# Linux's INIT_C_CC: ^C ^\ DEL ^U ^D, TIME 0, MIN 1, -, ^Q ^S ^Z, -, ^R ^O ^W ^V.
_INIT_CC = bytes.fromhex("031c7f150400010011131a00120f1716000000")

# ---- sizes and numbers ------------------------------------------------------

# N_TTY's read buffer, and the limit of the queue a pty writer fills (pty.c
# sets the tty buffer limit of both ends to 8 KiB).
N_TTY_BUF_SIZE = 4096
PTY_INPUT_LIMIT = 8192
# /proc/sys/kernel/pty/max by default.
PTY_MAX = 4096
# Device numbers: TTYAUX_MAJOR 5 minor 2 is ptmx; UNIX98_PTY_SLAVE_MAJOR 136.
PTMX_RDEV = makedev(5, 2)
PTS_MAJOR = 136

SIGHUP = 1
SIGINT = 2
SIGQUIT = 3
SIGCONT = 18
SIGTSTP = 20
SIGWINCH = 28

_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]+")
_INT = struct.Struct("<i")
_UINT = struct.Struct("<I")
_TERMIOS = struct.Struct("<IIIIB19s")
WINSIZE_SIZE = 8

# Requests that take a structure from the caller (size in bytes), and those
# whose answer is copied out to it, for the system-call layer's tables.
PTY_IOCTL_IN_SIZES: dict[int, int] = {
    TIOCSWINSZ: WINSIZE_SIZE,
    TIOCSPTLCK: 4,
    TIOCSPGRP: 4,
}
PTY_IOCTL_OUT_SIZES: dict[int, int] = {
    TIOCGPTN: 4,
    TIOCGPTLCK: 4,
    TIOCGPGRP: 4,
    TIOCGSID: 4,
    TIOCOUTQ: 4,
    TIOCGEXCL: 4,
}
# Requests that depend on the caller's session and process group, or signal
# that group: the system-call layer sends them to `PtyFile.session_ioctl`
# with the caller's process group and raises the signals it returns.
SESSION_IOCTLS = frozenset(
    {TIOCSCTTY, TIOCNOTTY, TIOCGPGRP, TIOCSPGRP, TIOCGSID, TIOCSWINSZ, TIOCSIG}
)


# ---- character classes of the kernel's ctype (Latin-1) -----------------------


def _iscntrl(c: int) -> bool:
    return c < 0x20 or 0x7F <= c < 0xA0


def _isalnum(c: int) -> bool:
    if c < 0x80:
        return 0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A
    return c >= 0xC0 and c not in (0xD7, 0xF7)


def _tolower(c: int) -> int:
    upper = 0x41 <= c <= 0x5A or (0xC0 <= c <= 0xDE and c != 0xD7)
    return c + 0x20 if upper else c


def _toupper(c: int) -> int:
    lower = 0x61 <= c <= 0x7A or (c >= 0xDF and c != 0xF7)
    return c - 0x20 if lower else c


# ---- termios ---------------------------------------------------------------


class Termios(Record):
    """The kernel's ``struct termios`` (36 bytes): four flag words, c_line, c_cc."""

    __slots__ = ("c_iflag", "c_oflag", "c_cflag", "c_lflag", "c_line", "c_cc")

    def __init__(
        self,
        c_iflag: int,
        c_oflag: int,
        c_cflag: int,
        c_lflag: int,
        c_line: int = 0,
        c_cc: bytes = _INIT_CC,
    ) -> None:
        self.c_iflag = c_iflag
        self.c_oflag = c_oflag
        self.c_cflag = c_cflag
        self.c_lflag = c_lflag
        self.c_line = c_line
        self.c_cc = c_cc

    @classmethod
    def for_slave(cls) -> Termios:
        """What Linux gives a new pty slave: tty_std_termios without HUPCL."""
        lflag = ISIG | ICANON | ECHO | ECHOE | ECHOK | ECHOCTL | ECHOKE | IEXTEN
        return cls(ICRNL | IXON, OPOST | ONLCR, B38400 | CS8 | CREAD, lflag)

    @classmethod
    def for_master(cls) -> Termios:
        """The master's fixed settings: no input, output or local processing."""
        return cls(0, 0, B38400 | CS8 | CREAD, 0)

    @classmethod
    def unpack(cls, data: bytes) -> Termios:
        if len(data) < _TERMIOS.size:
            raise FsError(errno.EINVAL, "termios needs 36 bytes")
        return cls(*_TERMIOS.unpack_from(data))

    def pack(self) -> bytes:
        return _TERMIOS.pack(
            self.c_iflag,
            self.c_oflag,
            self.c_cflag,
            self.c_lflag,
            self.c_line,
            self.c_cc,
        )

    def cc(self, index: int) -> int:
        """The special character at ``index``; -1 when disabled (0)."""
        value = self.c_cc[index]
        return value if value else -1


# ---- one end and its line discipline -----------------------------------------


class _Tty:
    """One end of a pty: its termios, its N_TTY state and its open count."""

    def __init__(self, pair: PtyPair, termios: Termios, is_master: bool) -> None:
        self.pair = pair
        self.is_master = is_master
        self.termios = termios
        self.link: _Tty = self
        # Bytes the other end wrote, not yet through this discipline.
        self.queue = bytearray()
        # Processed input; in canonical mode ``line_ends`` marks where each
        # complete line ends (index of its delimiter, and whether that
        # delimiter is an end-of-file that the reader does not see), and
        # ``canon_head`` is how many bytes complete lines hold.
        self.read_buf = bytearray()
        self.line_ends: list[tuple[int, bool]] = []
        self.canon_head = 0
        # Output state: column for tabs and erasing, echoes not yet sent.
        self.column = 0
        self.canon_column = 0
        self.held_echo = bytearray()
        self.erasing = False
        self.lnext = False
        self.stopped = False
        self.tco_stopped = False
        self.exclusive = False
        self.other_closed = False
        self.hung_up = False
        self.opens = 0
        self._special: frozenset[int] = frozenset()
        self._raw = True
        self._icanon = False
        self._update_char_map()

    # -- settings -----------------------------------------------------------

    def _update_char_map(self) -> None:
        # Which bytes take the slow path, as N_TTY's char_map; with no input
        # processing at all the discipline only queues bytes.
        t = self.termios
        i, lflag = t.c_iflag, t.c_lflag
        self._icanon = bool(lflag & ICANON)
        processing = i & (ISTRIP | IUCLC | IGNCR | ICRNL | INLCR | IXON | PARMRK)
        if not processing and not lflag & (ICANON | ISIG | ECHO):
            self._raw = True
            self._special = frozenset()
            return
        special = set()
        if i & (IGNCR | ICRNL):
            special.add(0x0D)
        if i & INLCR:
            special.add(0x0A)
        if lflag & ICANON:
            special.update((t.c_cc[VERASE], t.c_cc[VKILL], t.c_cc[VEOF], 0x0A))
            special.add(t.c_cc[VEOL])
            if lflag & IEXTEN:
                special.update((t.c_cc[VWERASE], t.c_cc[VLNEXT], t.c_cc[VEOL2]))
                if lflag & ECHO:
                    special.add(t.c_cc[VREPRINT])
        if i & IXON:
            special.update((t.c_cc[VSTART], t.c_cc[VSTOP]))
        if lflag & ISIG:
            special.update((t.c_cc[VINTR], t.c_cc[VQUIT], t.c_cc[VSUSP]))
        special.discard(0)
        self._special = frozenset(special)
        self._raw = False

    def set_termios(self, new: Termios, flush: bool = False) -> None:
        """TCSETS*: new settings; ``flush`` drops unread input first (TCSETSF)."""
        if flush:
            self._reset_input()
        old = self.termios
        if not self.is_master:
            # A pty has no character size or parity to set.
            new.c_cflag = (new.c_cflag & ~(CSIZE | PARENB)) | CS8 | CREAD
        self.termios = new
        if (old.c_lflag ^ new.c_lflag) & (ICANON | EXTPROC):
            # Switching modes: raw mode reads everything buffered; canonical
            # mode makes what is buffered one line the reader may take.
            self.line_ends = []
            if not new.c_lflag & ICANON or not self.read_buf:
                self.canon_head = 0
            else:
                self.line_ends = [(len(self.read_buf) - 1, False)]
                self.canon_head = len(self.read_buf)
            self.erasing = False
            self.lnext = False
        self._update_char_map()
        if not new.c_iflag & IXON and old.c_iflag & IXON and not self.tco_stopped:
            self.start()
        self.pair.settle()

    # -- input side ---------------------------------------------------------

    def receive(self, data: bytes | bytearray | memoryview) -> int:
        """Queue what the other end writes; returns how many bytes fit."""
        count = max(0, min(PTY_INPUT_LIMIT - len(self.queue), len(data)))
        self.queue += data[:count]
        return count

    def process_input(self) -> int:
        """Move queued bytes through the discipline while the buffer has
        room; returns how many were taken."""
        taken = 0
        while self.queue:
            room = self._receive_room()
            if room <= 0:
                break
            chunk = bytes(self.queue[:room])
            del self.queue[:room]
            taken += len(chunk)
            if self._raw:
                self.read_buf += chunk
            else:
                for c in chunk:
                    self._receive_char(c)
        return taken

    def _receive_room(self) -> int:
        # N_TTY's room: one byte is always kept free. A canonical line that
        # fills the buffer keeps taking bytes, each replacing the last one,
        # so that a newline or an erase can still arrive.
        room = N_TTY_BUF_SIZE - len(self.read_buf)
        if self.termios.c_iflag & PARMRK:
            room = (room + 2) // 3
        room -= 1
        if room > 0:
            return room
        overflow = self._icanon and self.canon_head == 0
        if overflow and room < 0:
            del self.read_buf[-1:]
        return 1 if overflow else 0

    def _receive_char(self, c: int) -> None:
        t = self.termios
        if t.c_iflag & ISTRIP:
            c &= 0x7F
        if t.c_iflag & IUCLC and t.c_lflag & IEXTEN:
            c = _tolower(c)
        if self.lnext:
            self.lnext = False
            self._receive_plain(c)
        elif c in self._special:
            self._receive_special(c)
        else:
            self._receive_plain(c)

    def _put(self, c: int) -> None:
        if c == 0xFF and self.termios.c_iflag & PARMRK:
            self.read_buf.append(c)
        self.read_buf.append(c)

    def _restart_on_any_byte(self) -> None:
        # IXANY: any input restarts output that the STOP character stopped.
        iflag = self.termios.c_iflag
        if self.stopped and not self.tco_stopped and iflag & IXON and iflag & IXANY:
            self.start()

    def _receive_plain(self, c: int) -> None:
        t = self.termios
        self._restart_on_any_byte()
        if t.c_lflag & ECHO:
            self._finish_erasing()
            if self.canon_head == len(self.read_buf):
                self.canon_column = self.column
            self._echo_char(c)
        self._put(c)

    def _receive_special(self, c: int) -> None:
        t = self.termios
        iflag, lflag = t.c_iflag, t.c_lflag
        if iflag & IXON and c in (t.c_cc[VSTART], t.c_cc[VSTOP]):
            if c == t.c_cc[VSTART]:
                self.start()
            else:
                self.stopped = True
            return
        if lflag & ISIG:
            for index, signal in ((VINTR, SIGINT), (VQUIT, SIGQUIT), (VSUSP, SIGTSTP)):
                if c == t.c_cc[index]:
                    self._receive_signal_char(signal, c)
                    return
        self._restart_on_any_byte()
        if c == 0x0D:
            if iflag & IGNCR:
                return
            if iflag & ICRNL:
                c = 0x0A
        elif c == 0x0A and iflag & INLCR:
            c = 0x0D
        if self._icanon and self._receive_canonical(c):
            return
        if lflag & ECHO:
            self._finish_erasing()
            if c == 0x0A:
                self._echo_raw(c)
            else:
                if self.canon_head == len(self.read_buf):
                    self.canon_column = self.column
                self._echo_char(c)
        self._put(c)

    def _receive_canonical(self, c: int) -> bool:
        """Line editing and line ends; False when ``c`` is an ordinary byte."""
        t = self.termios
        lflag = t.c_lflag
        iexten = bool(lflag & IEXTEN)
        if c in (t.cc(VERASE), t.cc(VKILL)) or (iexten and c == t.cc(VWERASE)):
            self._erase(c)
            return True
        if iexten and c == t.cc(VLNEXT):
            self.lnext = True
            if lflag & ECHO:
                self._finish_erasing()
                if lflag & ECHOCTL:
                    self._echo_raw(ord("^"))
                    self._echo_raw(0x08)
            return True
        if iexten and lflag & ECHO and c == t.cc(VREPRINT):
            self._finish_erasing()
            self._echo_char(c)
            self._echo_raw(0x0A)
            for pending in bytes(self.read_buf[self.canon_head :]):
                self._echo_char(pending)
            return True
        if c == 0x0A:
            if lflag & (ECHO | ECHONL):
                self._echo_raw(0x0A)
            self._end_line(c, eof=False)
            return True
        if c == t.cc(VEOF):
            # The end-of-file character ends the line but is not read.
            self._end_line(0, eof=True)
            return True
        if c == t.cc(VEOL) or (iexten and c == t.cc(VEOL2)):
            if lflag & ECHO:
                if self.canon_head == len(self.read_buf):
                    self.canon_column = self.column
                self._echo_char(c)
            if c == 0xFF and t.c_iflag & PARMRK:
                self.read_buf.append(c)
            self._end_line(c, eof=False)
            return True
        return False

    def _end_line(self, c: int, eof: bool) -> None:
        self.line_ends.append((len(self.read_buf), eof))
        self.read_buf.append(c)
        self.canon_head = len(self.read_buf)

    def _erase(self, c: int) -> None:
        # VERASE takes one character back, VWERASE one word, VKILL the line;
        # the echo rubs them out on screen the way the ECHO* flags ask.
        t = self.termios
        lflag = t.c_lflag
        if len(self.read_buf) == self.canon_head:
            return
        if c == t.cc(VERASE):
            kind = "erase"
        elif c == t.cc(VWERASE):
            kind = "word"
        else:
            if not lflag & ECHO:
                del self.read_buf[self.canon_head :]
                return
            if not (lflag & ECHOK and lflag & ECHOKE and lflag & ECHOE):
                del self.read_buf[self.canon_head :]
                self._finish_erasing()
                self._echo_char(c)
                if lflag & ECHOK:
                    self._echo_raw(0x0A)
                return
            kind = "kill"
        utf8 = bool(t.c_iflag & IUTF8)
        seen_alnums = 0
        while len(self.read_buf) > self.canon_head:
            head = len(self.read_buf)
            # One character, which in UTF-8 mode may be several bytes.
            while True:
                head -= 1
                ch = self.read_buf[head]
                if not (utf8 and ch & 0xC0 == 0x80 and head != self.canon_head):
                    break
            if utf8 and ch & 0xC0 == 0x80:
                break
            if kind == "word":
                if _isalnum(ch) or ch == ord("_"):
                    seen_alnums += 1
                elif seen_alnums:
                    break
            erased = bytes(self.read_buf[head:])
            del self.read_buf[head:]
            if lflag & ECHO:
                self._echo_erased(kind, ch, erased)
            if kind == "erase":
                break
        if len(self.read_buf) == self.canon_head and lflag & ECHO:
            self._finish_erasing()

    def _echo_erased(self, kind: str, ch: int, erased: bytes) -> None:
        t = self.termios
        lflag = t.c_lflag
        if lflag & ECHOPRT:
            if not self.erasing:
                self._echo_raw(ord("\\"))
                self.erasing = True
            self._echo_char(ch)
            for extra in erased[1:]:
                self._echo_raw(extra)
                self.column = max(0, self.column - 1)
        elif kind == "erase" and not lflag & ECHOE:
            self._echo_char(t.c_cc[VERASE])
        elif ch == 0x09:
            self._echo_erase_tab()
        else:
            rub = b"\b \b"
            if _iscntrl(ch) and lflag & ECHOCTL:
                self._echo_text(rub)
            if not _iscntrl(ch) or lflag & ECHOCTL:
                self._echo_text(rub)

    def _echo_erase_tab(self) -> None:
        # Going back over a tab: count the columns used since the previous
        # tab, or since the start of the line (then from its first column).
        t = self.termios
        utf8 = bool(t.c_iflag & IUTF8)
        columns = 0
        after_tab = False
        for b in reversed(self.read_buf[self.canon_head :]):
            if b == 0x09:
                after_tab = True
                break
            if _iscntrl(b):
                if t.c_lflag & ECHOCTL:
                    columns += 2
            elif not (utf8 and b & 0xC0 == 0x80):
                columns += 1
        if not after_tab:
            columns += self.canon_column
        count = 8 - (columns & 7)
        self.column = max(0, self.column - count)
        self._send_echo(b"\b" * count)

    def _receive_signal_char(self, signal: int, c: int) -> None:
        t = self.termios
        if not t.c_lflag & NOFLSH:
            self.held_echo.clear()
            self.link.queue.clear()
            self._reset_input()
        self._report_signal(signal)
        if t.c_iflag & IXON:
            self.start()
        if t.c_lflag & ECHO:
            self._echo_char(c)

    def _report_signal(self, signal: int) -> None:
        # Linux signals the terminal's foreground process group, which only
        # exists while the slave is the controlling terminal of a session.
        # The operation under way sends it once it leaves the pair's lock.
        if not self.is_master and self.pair.devpts.controlling is self.pair:
            self.pair.raised.append(signal)

    def _reset_input(self) -> None:
        self.read_buf.clear()
        self.line_ends = []
        self.canon_head = 0
        self.erasing = False

    # -- echo -----------------------------------------------------------------

    def _finish_erasing(self) -> None:
        if self.erasing:
            self._echo_raw(ord("/"))
            self.erasing = False

    def _echo_char(self, c: int) -> None:
        # With ECHOCTL a control character is shown as ^X.
        if self.termios.c_lflag & ECHOCTL and _iscntrl(c) and c != 0x09:
            self.column += 2
            self._send_echo(bytes((ord("^"), c ^ 0o100)))
        else:
            self._echo_raw(c)

    def _echo_raw(self, c: int) -> None:
        if self.termios.c_oflag & OPOST:
            out, self.column, self.canon_column = self._output_char(
                c, self.column, self.canon_column
            )
            self._send_echo(out)
        else:
            self._send_echo(bytes((c,)))

    def _echo_text(self, text: bytes) -> None:
        for c in text:
            self._echo_raw(c)

    def _send_echo(self, data: bytes) -> None:
        self.held_echo += data
        # Echoes wait while output is stopped; past a buffer's worth the
        # oldest are dropped, as N_TTY's echo buffer does.
        excess = len(self.held_echo) - N_TTY_BUF_SIZE
        if excess > 0:
            del self.held_echo[:excess]
        self.flush_echoes()

    def flush_echoes(self) -> None:
        """Send held echoes to the other end, as far as it has room."""
        if self.held_echo:
            sent = self._send(self.held_echo)
            del self.held_echo[:sent]

    # -- output side ----------------------------------------------------------

    def _output_char(
        self, c: int, column: int, canon_column: int
    ) -> tuple[bytes, int, int]:
        """OPOST processing of one byte: (bytes out, column, canon column)."""
        o = self.termios.c_oflag
        if c == 0x0A:
            if o & ONLRET:
                column = 0
            if o & ONLCR:
                return b"\r\n", 0, 0
            return b"\n", column, column
        if c == 0x0D:
            if o & ONOCR and column == 0:
                return b"", column, canon_column
            if o & OCRNL:
                if o & ONLRET:
                    column = canon_column = 0
                return b"\n", column, canon_column
            return b"\r", 0, 0
        if c == 0x09:
            spaces = 8 - (column & 7)
            if o & TABDLY == XTABS:
                return b" " * spaces, column + spaces, canon_column
            return b"\t", column + spaces, canon_column
        if c == 0x08:
            return b"\b", max(0, column - 1), canon_column
        if not _iscntrl(c):
            if o & OLCUC:
                c = _toupper(c)
            if not (self.termios.c_iflag & IUTF8 and c & 0xC0 == 0x80):
                column += 1
        return bytes((c,)), column, canon_column

    def write_room(self) -> int:
        """How many bytes the other end's input queue takes now."""
        if self.stopped or self.tco_stopped:
            return 0
        return PTY_INPUT_LIMIT - len(self.link.queue)

    def _send(self, data: bytes | bytearray | memoryview) -> int:
        if self.stopped or self.tco_stopped:
            return 0
        return self.link.receive(data)

    def _write_some(self, data: memoryview) -> int:
        """Write what fits now; returns how many bytes of ``data`` were used."""
        if not self.termios.c_oflag & OPOST:
            return self._send(data)
        room = self.write_room()
        out = bytearray()
        column, canon_column = self.column, self.canon_column
        # Runs of printable ASCII only move the column (unless OLCUC
        # changes their case), so they are copied whole.
        plain = _PRINTABLE_RUN if not self.termios.c_oflag & OLCUC else None
        used = 0
        while used < len(data):
            run = plain.match(data, used) if plain is not None else None
            if run is not None:
                count = min(run.end() - used, room - len(out))
                if count <= 0:
                    break
                out += data[used : used + count]
                column += count
                used += count
                continue
            piece, new_column, new_canon = self._output_char(
                data[used], column, canon_column
            )
            if len(out) + len(piece) > room:
                break
            out += piece
            column, canon_column = new_column, new_canon
            used += 1
        self.column, self.canon_column = column, canon_column
        if out:
            self._send(out)
        return used

    def write(self, data: bytes | memoryview, nonblocking: bool) -> int:
        """write(2) on this end: all of ``data``, waiting for room unless
        ``nonblocking``; a partial count when some went before a wait."""
        view = memoryview(data).cast("B")
        done = 0
        changed = self.pair.changed
        with blocking(), changed:
            self.flush_echoes()
            while True:
                if self.hung_up:
                    if done:
                        break
                    raise FsError(errno.EIO, "the pty master has closed")
                done += self._write_some(view[done:])
                self.pair.settle()
                if done == len(view):
                    break
                if nonblocking:
                    if done:
                        break
                    raise FsError(errno.EAGAIN, "the pty's other end is full")
                if not wait(changed):
                    if done:
                        break
                    raise interruption()
            changed.notify_all()
        return done

    # -- reading --------------------------------------------------------------

    def input_available(self, for_poll: bool = False) -> bool:
        """Whether a read returns data now (poll honours VMIN in raw mode)."""
        if self._icanon:
            return self.canon_head > 0
        t = self.termios
        wanted = 1
        if for_poll and not t.c_cc[VTIME] and t.c_cc[VMIN]:
            wanted = t.c_cc[VMIN]
        return len(self.read_buf) >= wanted

    def read(self, buf: memoryview, nonblocking: bool) -> int:
        """read(2) on this end, with canonical lines or VMIN/VTIME rules."""
        if not len(buf):
            return 0
        changed = self.pair.changed
        with blocking(), changed:
            if self.hung_up:
                return 0
            t = self.termios
            # VMIN and VTIME: MIN bytes with TIME as the gap allowed between
            # them once one came; with MIN 0, TIME bounds the whole wait.
            minimum, gap, timeout = 0, 0.0, None
            if not self._icanon:
                minimum = t.c_cc[VMIN]
                if minimum:
                    gap = t.c_cc[VTIME] / 10
                else:
                    timeout = t.c_cc[VTIME] / 10
                    minimum = 1
            got = 0
            deadline = None if timeout is None else time.monotonic() + timeout
            while got < len(buf):
                if not self.input_available():
                    if self.other_closed:
                        if got:
                            break
                        raise FsError(errno.EIO, "the pty's other end has closed")
                    if self.hung_up:
                        break
                    remaining = None
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                    if nonblocking:
                        if got:
                            break
                        raise FsError(errno.EAGAIN, "no input on the pty yet")
                    if not wait(changed, remaining):
                        if got:
                            break
                        raise interruption()
                    continue
                got += self._copy_out(buf[got:])
                self.link.flush_echoes()
                self.pair.settle()
                if self._icanon or got >= minimum:
                    break
                if gap:
                    deadline = time.monotonic() + gap
            changed.notify_all()
        return got

    def _copy_out(self, buf: memoryview) -> int:
        if not self._icanon:
            count = min(len(buf), len(self.read_buf))
            buf[:count] = self.read_buf[:count]
            self._consume(count)
            return count
        # One line at most, its delimiter included unless it is end of file.
        available = min(len(buf), self.canon_head)
        if self.line_ends and self.line_ends[0][0] < available:
            end, eof = self.line_ends.pop(0)
            count = end if eof else end + 1
            buf[:count] = self.read_buf[:count]
            self._consume(end + 1)
            return count
        buf[:available] = self.read_buf[:available]
        self._consume(available)
        return available

    def _consume(self, count: int) -> None:
        del self.read_buf[:count]
        self.canon_head = max(0, self.canon_head - count)
        self.line_ends = [(p - count, e) for p, e in self.line_ends if p >= count]

    def input_count(self) -> int:
        """FIONREAD: bytes a reader would get (canonical: whole lines only)."""
        if not self._icanon:
            return len(self.read_buf)
        eofs = sum(1 for p, e in self.line_ends if e and p < self.canon_head)
        return self.canon_head - eofs

    # -- flow and flushing ----------------------------------------------------

    def start(self) -> None:
        """Resume output stopped by the STOP character or TCOOFF."""
        if self.stopped:
            self.stopped = False
            self.flush_echoes()

    def flush(self, which: int) -> None:
        """tcflush: drop unread input (TCIFLUSH), unsent output (TCOFLUSH)."""
        if which not in (TCIFLUSH, TCOFLUSH, TCIOFLUSH):
            raise FsError(errno.EINVAL, f"unknown tcflush queue {which}")
        if which in (TCIFLUSH, TCIOFLUSH):
            self.queue.clear()
            self._reset_input()
            self.held_echo.clear()
        if which in (TCOFLUSH, TCIOFLUSH):
            self.link.queue.clear()
        self.pair.settle()

    def flow(self, action: int) -> None:
        """tcflow: stop or restart output, or send STOP/START to the other end."""
        if action == TCOOFF:
            self.tco_stopped = True
        elif action == TCOON:
            self.tco_stopped = False
            self.stopped = False
            self.flush_echoes()
        elif action in (TCIOFF, TCION):
            c = self.termios.c_cc[VSTOP if action == TCIOFF else VSTART]
            if c:
                self.link.receive(bytes((c,)))
        else:
            raise FsError(errno.EINVAL, f"unknown tcflow action {action}")
        self.pair.settle()


# ---- a pair, and the set of them -----------------------------------------------


class PtyPair:
    """A master and its slave, numbered ``index`` in /dev/pts."""

    def __init__(self, devpts: DevPts, index: int) -> None:
        self.devpts = devpts
        self.index = index
        self.changed = threading.Condition()
        self.master = _Tty(self, Termios.for_master(), is_master=True)
        self.slave = _Tty(self, Termios.for_slave(), is_master=False)
        self.master.link = self.slave
        self.slave.link = self.master
        self.locked = True
        self.master_open = True
        self.winsize = bytes(WINSIZE_SIZE)
        self.created_ns = time.time_ns()
        # Signals the slave's discipline raised, not sent yet (see above).
        self.raised: list[int] = []

    def open_slave(self, flags: int) -> None:
        """Count an open of the slave; EIO while locked or after the master closed."""
        with self.changed:
            if not self.master_open:
                raise FsError(errno.EIO, f"pty {self.index} has no master")
            if self.locked:
                raise FsError(errno.EIO, f"pty {self.index} is locked (unlockpt)")
            self.slave.opens += 1
            self.master.other_closed = False
            self.changed.notify_all()
        # A session leader without a controlling terminal gets this one when
        # it opens it for reading without O_NOCTTY.
        devpts = self.devpts
        readable = flags & O_ACCMODE != O_WRONLY
        if not flags & O_NOCTTY and readable and devpts.controlling is None:
            devpts.make_controlling(self)

    def close_slave(self) -> None:
        with self.changed:
            self.slave.opens -= 1
            if self.slave.opens == 0:
                self.master.other_closed = True
            self.changed.notify_all()
        self._release_if_unused()

    def close_master(self) -> None:
        with self.changed:
            self.master_open = False
            self.master.other_closed = True
            self.slave.other_closed = True
            self.slave.hung_up = True
            self.changed.notify_all()
        devpts = self.devpts
        if devpts.controlling is self:
            # The hang-up ends the session's hold on its terminal; Linux
            # tells the session leader with SIGHUP, then SIGCONT.
            session = devpts.session
            devpts.give_up_controlling()
            send_from_terminal(session, (SIGHUP, SIGCONT))
        self._release_if_unused()

    def _release_if_unused(self) -> None:
        if not self.master_open and self.slave.opens == 0:
            self.devpts.release(self)

    def settle(self) -> None:
        """Run both disciplines over their queued input until neither moves
        (the slave's echoes land in the master's queue on the way), then
        wake waiters. Callers hold ``changed``."""
        while self.slave.process_input() + self.master.process_input():
            pass
        self.changed.notify_all()

    def send_raised(self) -> None:
        """Send the signals the discipline raised, to the terminal's session.

        Called by each file operation after it has left ``changed``.
        """
        if not self.raised:
            return
        with self.changed:
            signals, self.raised = tuple(self.raised), []
        send_from_terminal(self.devpts.session, signals)

    def set_winsize(self, winsize: bytes) -> bool:
        """TIOCSWINSZ (both ends share it); True when the size changed."""
        with self.changed:
            if winsize == self.winsize:
                return False
            self.winsize = bytes(winsize)
            return True


class DevPts:
    """The pty pairs of one kernel, and which slave (if any) is the session's
    controlling terminal (the kernel runs one session, led by its program)."""

    def __init__(self) -> None:
        self._pairs: dict[int, PtyPair] = {}
        self._lock = threading.Lock()
        self._controlling: PtyPair | None = None
        # The program whose controlling terminal it is: the session leader,
        # and its only process group. None when it was taken outside a
        # program's system call (the kernel's own use, tests).
        self.session: Process | None = None

    @property
    def controlling(self) -> PtyPair | None:
        """The pair whose slave is the session's controlling terminal."""
        session = self.session
        if session is not None and session.ended.is_set():
            # The session ended with its leader: the terminal is free for
            # the next program.
            self.give_up_controlling()
        return self._controlling

    def make_controlling(self, pair: PtyPair) -> None:
        """Make ``pair``'s slave the controlling terminal of the calling program."""
        self._controlling = pair
        self.session = calling_process()
        logger.debug("pty %d became the controlling terminal", pair.index)

    def give_up_controlling(self) -> None:
        self._controlling = None
        self.session = None

    def allocate(self) -> PtyPair:
        """A new pair at the lowest free index; ENOSPC past PTY_MAX."""
        with self._lock:
            index = next(i for i in itertools.count() if i not in self._pairs)
            if index >= PTY_MAX:
                raise FsError(errno.ENOSPC, "every pty is in use")
            pair = self._pairs[index] = PtyPair(self, index)
        logger.debug("allocated pty %d", index)
        return pair

    def release(self, pair: PtyPair) -> None:
        with self._lock:
            if self._pairs.get(pair.index) is pair:
                del self._pairs[pair.index]
        logger.debug("released pty %d", pair.index)

    def listed(self) -> list[PtyPair]:
        """Pairs whose slave /dev/pts shows: those whose master is open."""
        with self._lock:
            pairs = sorted(self._pairs.items())
        return [pair for _, pair in pairs if pair.master_open]

    def find(self, index: int) -> PtyPair | None:
        pair = self._pairs.get(index)
        return pair if pair is not None and pair.master_open else None


# ---- device nodes --------------------------------------------------------------


class PtmxDevice(DeviceVnode):
    """/dev/ptmx (and /dev/pts/ptmx): each open makes a new pair."""

    def __init__(
        self, mount: Mount, ino: int, devpts: DevPts, perm: int = 0o666
    ) -> None:
        super().__init__(mount, ino, PTMX_RDEV, perm)
        self.devpts = devpts

    def open(self, flags: int, path: str) -> File:
        pair = self.devpts.allocate()
        return PtyMasterFile(self, flags, path, pair, pair.master)


class PtySlaveDevice(DeviceVnode):
    """/dev/pts/N: the slave of pair N."""

    def __init__(self, mount: Mount, ino: int, pair: PtyPair) -> None:
        super().__init__(mount, ino, makedev(PTS_MAJOR, pair.index), 0o600)
        self.pair = pair
        self.atime = self.mtime = self.ctime = pair.created_ns

    @property
    def nlink(self) -> int:  # type: ignore[override]
        """1 while /dev/pts lists the slave; 0 once its master has closed."""
        return 1 if self.pair.master_open else 0

    @nlink.setter
    def nlink(self, value: int) -> None:
        # The count follows the pair; the base class's assignment is moot.
        pass

    def open(self, flags: int, path: str) -> File:
        self.pair.open_slave(flags)
        return PtySlaveFile(self, flags, path, self.pair, self.pair.slave)


class PtsDir(Vnode):
    """/dev/pts: ``ptmx`` and one slave node per pair whose master is open."""

    def __init__(
        self, mount: Mount, ino: int, devpts: DevPts, new_ino: Callable[[], int]
    ) -> None:
        super().__init__(mount, ino, statmod.S_IFDIR | 0o755, nlink=2)
        self.devpts = devpts
        self._new_ino = new_ino
        self._ptmx: PtmxDevice | None = None
        self._slaves: dict[int, PtySlaveDevice] = {}

    @property
    def blocks(self) -> int:
        return 0

    def lookup(self, name: str) -> Vnode:
        if name == ".":
            return self
        if name == "..":
            return self.mount.root
        if name == "ptmx":
            if self._ptmx is None:
                # devpts mounts its own ptmx with mode 000 (ptmxmode).
                self._ptmx = PtmxDevice(self.mount, self._new_ino(), self.devpts, 0)
            return self._ptmx
        if not name.isdigit() or (name != "0" and name.startswith("0")):
            raise FsError(errno.ENOENT, f"no pty {name!r}")
        pair = self.devpts.find(int(name))
        if pair is None:
            raise FsError(errno.ENOENT, f"no pty {name!r}")
        node = self._slaves.get(pair.index)
        if node is None or node.pair is not pair:
            node = PtySlaveDevice(self.mount, self._new_ino(), pair)
            self._slaves[pair.index] = node
        return node

    def readdir(self) -> list[tuple[str, int, int]]:
        entries = [("ptmx", self.lookup("ptmx").ino, DT_CHR)]
        for pair in self.devpts.listed():
            entries.append((str(pair.index), self.lookup(str(pair.index)).ino, DT_CHR))
        return entries

    def slave_node(self, pair: PtyPair) -> PtySlaveDevice:
        """The node of ``pair``'s slave here, reachable by path for realpath."""
        node = self.lookup(str(pair.index))
        node.parent_hint = self
        node.name_hint = str(pair.index)
        return node

    def _no_dir_op(self) -> FsError:
        return FsError(errno.EPERM, "devpts holds only the kernel's ptys")


# ---- open ends -----------------------------------------------------------------


class PtyFile(StreamFile):
    """An open end of a pty: reads, writes, terminal ioctls and readiness."""

    no_position = "a terminal has no file position"

    def __init__(
        self, vnode: Vnode, flags: int, path: str, pair: PtyPair, tty: _Tty
    ) -> None:
        super().__init__(vnode, flags, path)
        self.pair = pair
        self.tty = tty

    # -- data -------------------------------------------------------------------

    def readinto(self, buf: memoryview) -> int:
        if not self.readable:
            raise FsError(errno.EBADF, "file not open for reading")
        try:
            return self.tty.read(buf, bool(self.flags & O_NONBLOCK))
        finally:
            # Room freed by the read lets queued input, which may hold an
            # interrupt character, through the discipline.
            self.pair.send_raised()

    def read(self, size: int) -> bytes:
        buffer = bytearray(max(size, 0))
        count = self.readinto(memoryview(buffer))
        return bytes(buffer[:count])

    def write(self, data: bytes | memoryview) -> int:
        if not self.writable:
            raise FsError(errno.EBADF, "file not open for writing")
        try:
            return self.tty.write(data, bool(self.flags & O_NONBLOCK))
        finally:
            self.pair.send_raised()

    # -- terminal ---------------------------------------------------------------

    def isatty(self) -> bool:
        return not self.tty.hung_up

    def open_peer(self, flags: int) -> File:
        """TIOCGPTPEER: open the slave of this master; EIO on a slave."""
        raise FsError(errno.EIO, "TIOCGPTPEER needs a pty master")

    def ioctl(self, request: int, arg: int | bytes) -> int | bytes:
        try:
            return self._ioctl(request, arg)
        finally:
            # New settings or a flow change may let an interrupt through.
            self.pair.send_raised()

    def _ioctl(self, request: int, arg: int | bytes) -> int | bytes:
        tty = self.tty
        with self.pair.changed:
            if tty.hung_up:
                raise FsError(errno.EIO, "the pty has been hung up")
            # Settings and size live with the slave, whichever end asks.
            real = self.pair.slave
            if request == TCGETS:
                return real.termios.pack()
            if request in (TCSETS, TCSETSW, TCSETSF):
                real.set_termios(Termios.unpack(_bytes(arg)), request == TCSETSF)
                return 0
            if request == TIOCGWINSZ:
                return self.pair.winsize
            if request == FIONREAD:
                return _INT.pack(tty.input_count())
            if request == TIOCOUTQ:
                # Output reaches the other end at once: nothing waits here.
                return _INT.pack(0)
            if request == TCFLSH:
                tty.flush(_value(arg))
                return 0
            if request == TCXONC:
                tty.flow(_value(arg))
                return 0
            if request in (TCSBRK, TCSBRKP, TIOCSBRK, TIOCCBRK):
                # A pty has no line to send a break on, and nothing to drain.
                return 0
            if request in (TIOCEXCL, TIOCNXCL):
                tty.exclusive = request == TIOCEXCL
                return 0
            if request == TIOCGEXCL:
                return _INT.pack(int(tty.exclusive))
        if request in SESSION_IOCTLS:
            result, _ = self.session_ioctl(request, arg, 0)
            return result
        return self._pty_ioctl(request, arg)

    def _pty_ioctl(self, request: int, arg: int | bytes) -> int | bytes:
        logger.debug("pty ioctl %#x not supported", request)
        raise FsError(errno.ENOTTY, f"pty ioctl {request:#x} not supported")

    def session_ioctl(
        self, request: int, arg: int | bytes, pgrp: int
    ) -> tuple[int | bytes, tuple[int, ...]]:
        """A SESSION_IOCTLS request from a caller in process group ``pgrp``.

        Returns the result and the signals the caller sends its own group,
        as kill(0, sig) would (TIOCNOTTY's SIGHUP and SIGCONT). The session
        has one process group, led by the program; the slave can be its
        controlling terminal (see DevPts.controlling). The signals Linux
        sends as the terminal (SIGWINCH on a resize, TIOCSIG's) go to that
        program from here.
        """
        tty = self.tty
        pair = self.pair
        devpts = pair.devpts
        if tty.hung_up:
            err = errno.ENOTTY if request == TIOCSPGRP else errno.EIO
            raise FsError(err, "the pty has been hung up")
        ours = devpts.controlling is pair
        on_slave = not tty.is_master
        if request == TIOCSWINSZ:
            changed = pair.set_winsize(_bytes(arg)[:WINSIZE_SIZE])
            if changed and ours:
                send_from_terminal(devpts.session, (SIGWINCH,))
            return 0, ()
        if request == TIOCSCTTY:
            if ours:
                return 0, ()
            if devpts.controlling is not None:
                raise FsError(errno.EPERM, "the session has a controlling terminal")
            devpts.make_controlling(pair)
            return 0, ()
        if request == TIOCNOTTY:
            if not (on_slave and ours):
                raise FsError(errno.ENOTTY, "not the controlling terminal")
            # The session leader gives the terminal up: Linux hangs up its
            # foreground group with SIGHUP and SIGCONT, sent as the caller's.
            devpts.give_up_controlling()
            return 0, (SIGHUP, SIGCONT)
        if request == TIOCSIG:
            if on_slave:
                raise FsError(errno.ENOTTY, "TIOCSIG needs a pty master")
            signal = _value(arg)
            if signal not in (SIGINT, SIGQUIT, SIGTSTP):
                raise FsError(errno.EINVAL, f"TIOCSIG cannot send signal {signal}")
            if ours:
                send_from_terminal(devpts.session, (signal,))
            return 0, ()
        if on_slave and not ours:
            raise FsError(errno.ENOTTY, "not the controlling terminal")
        if request == TIOCGPGRP:
            return _INT.pack(pgrp if ours else 0), ()
        if request == TIOCGSID:
            if not ours:
                raise FsError(errno.ENOTTY, "the pty leads no session")
            return _INT.pack(pgrp), ()
        if request == TIOCSPGRP:
            (wanted,) = _INT.unpack(_bytes(arg)[:4])
            if wanted < 0:
                raise FsError(errno.EINVAL, "negative process group")
            if not ours:
                raise FsError(errno.ENOTTY, "not the controlling terminal")
            if wanted != pgrp:
                raise FsError(errno.ESRCH, f"no process group {wanted}")
            return 0, ()
        raise FsError(errno.ENOTTY, f"pty ioctl {request:#x} not supported")

    def poll_ready(self, events: int) -> int:
        tty = self.tty
        with self.pair.changed:
            if tty.hung_up:
                ready = POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM | POLLERR | POLLHUP
            else:
                ready = 0
                if tty.input_available(for_poll=True):
                    ready |= POLLIN | POLLRDNORM
                if tty.other_closed:
                    ready |= POLLHUP
                if tty.write_room() > 0:
                    ready |= POLLOUT | POLLWRNORM
        return ready & (events | POLLERR | POLLHUP)


class PtyMasterFile(PtyFile):
    """The master end, as /dev/ptmx hands it out."""

    def release(self) -> None:
        self.pair.close_master()

    def open_peer(self, flags: int) -> File:
        """The slave, opened as /dev/pts/N of the devfs this master came from."""
        mount = self.vnode.mount
        if mount is None:
            raise FsError(errno.EIO, "the pty master belongs to no devfs")
        pts = _pts_dir(mount)
        node = pts.slave_node(self.pair)
        return node.open(flags, f"{mount.mountpoint.rstrip('/')}/pts/{self.pair.index}")

    def _pty_ioctl(self, request: int, arg: int | bytes) -> int | bytes:
        pair = self.pair
        if request == TIOCGPTN:
            return _UINT.pack(pair.index)
        if request == TIOCSPTLCK:
            (value,) = _INT.unpack(_bytes(arg)[:4])
            with pair.changed:
                pair.locked = value != 0
            return 0
        if request == TIOCGPTLCK:
            return _INT.pack(int(pair.locked))
        return super()._pty_ioctl(request, arg)


class PtySlaveFile(PtyFile):
    """An open slave."""

    def release(self) -> None:
        self.pair.close_slave()


def _pts_dir(mount: Mount) -> PtsDir:
    root = mount.root
    pts = root.lookup("pts")
    if not isinstance(pts, PtsDir):
        raise FsError(errno.EIO, "this devfs has no /dev/pts")
    pts.parent_hint = root
    pts.name_hint = "pts"
    return pts


def _bytes(arg: int | bytes) -> bytes:
    if not isinstance(arg, bytes):
        raise FsError(errno.EFAULT, "this request needs its structure's bytes")
    return arg


def _value(arg: int | bytes) -> int:
    if isinstance(arg, bytes):
        return _INT.unpack(arg[:4])[0]
    return _INT.unpack(_UINT.pack(arg & 0xFFFFFFFF))[0]
