"""Reads and writes blocked on pipes, eventfds, ptys and the console give way
to signals as on Linux, and a controlling pty sends its keyboard signals.

The C program below runs natively and in the VM (static and dynamic builds);
both runs must print the same. The calls without a VM drive the VFS objects
from a host thread posing as a guest thread.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from guest import native, osv, program_output

from osv.sched import KERNEL_LOCK, Process, Task, ThreadExit
from osv.sched._signal import kick, send_to_process, set_action
from osv.sched._sigqueue import (
    SA_RESTART,
    SA_RESTORER,
    SI_USER,
    SIGUSR1,
    SigAction,
    siginfo,
)
from osv.sched._task import set_current_task
from osv.vfs import (
    O_NOCTTY,
    O_RDWR,
    Console,
    DevFs,
    EventFile,
    FsError,
    RamFs,
    Vfs,
    make_pipe,
)

vm_test = pytest.mark.skipif(
    not (os.path.exists("/dev/kvm") and os.path.exists("/dev/ptmx"))
    or shutil.which("gcc") is None,
    reason="needs /dev/kvm, /dev/ptmx and gcc",
)

VARIANTS = {
    "static": ["gcc", "-static", "-pthread"],
    "dynamic": ["gcc", "-pthread"],
}

# One program, one scenario per argument; each prints what it observes in a
# form that does not depend on the machine. Signals come from a 100 ms
# ITIMER_REAL whose handler may write or read a file, so that a restarted
# call finds what it waits for.
WAITS_C = r"""
/* Blocking reads and writes that signals cut short, printed so that a VM
   run can be compared with Linux line for line. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <pty.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <termios.h>
#include <unistd.h>

/* ---- SIGALRM, and what its handler does besides counting ---- */

static volatile sig_atomic_t alarms;
static int wake_fd = -1, drain_fd = -1;
static const void *wake_data;
static size_t wake_size, drain_size;
/* The first alarm puts the handler back without SA_RESTART and arms again. */
static volatile sig_atomic_t then_plain;

static void on_alarm(int sig);

static void install(int sig, void (*fn)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

static void arm(void) {
    struct itimerval t = {{0, 0}, {0, 100000}};
    setitimer(ITIMER_REAL, &t, NULL);
}

static void on_alarm(int sig) {
    (void)sig;
    alarms++;
    if (wake_fd >= 0 && write(wake_fd, wake_data, wake_size) < 0)
        _exit(3);
    if (drain_fd >= 0) {
        char sink[4096];
        if (read(drain_fd, sink, drain_size) < 0)
            _exit(4);
    }
    if (then_plain) {
        then_plain = 0;
        install(SIGALRM, on_alarm, 0);
        arm();
    }
}

/* An alarm in 100 ms; its handler writes `size` bytes of `data` to `fd`. */
static void alarm_writing(int restart, int fd, const void *data, size_t size) {
    alarms = 0;
    wake_fd = fd;
    wake_data = data;
    wake_size = size;
    drain_fd = -1;
    install(SIGALRM, on_alarm, restart ? SA_RESTART : 0);
    arm();
}

/* An alarm in 100 ms; its handler reads `size` bytes from `fd`. */
static void alarm_reading(int restart, int fd, size_t size) {
    alarm_writing(restart, -1, NULL, 0);
    drain_fd = fd;
    drain_size = size;
}

static void report(const char *label, ssize_t r, int err) {
    if (r < 0)
        printf("%s: -1 %s alarms=%d\n", label, strerrorname_np(err), alarms);
    else
        printf("%s: %zd alarms=%d\n", label, r, alarms);
}

/* A blocking read of `fd` that an alarm interrupts; the handler writes
   `data` to `wake`. Without SA_RESTART the read fails and the data waits
   for the next one; with it the read starts again and gets the data. */
static void interrupted_read(const char *what, int fd, int wake, const void *data,
                             size_t size) {
    char buf[64], label[96];
    for (int restart = 0; restart < 2; restart++) {
        snprintf(label, sizeof label, "%s%s", what, restart ? ", SA_RESTART" : "");
        alarm_writing(restart, wake, data, size);
        ssize_t r = read(fd, buf, sizeof buf);
        report(label, r, errno);
        if (r < 0) {
            r = read(fd, buf, sizeof buf);
            report("  next read", r, errno);
        }
    }
}

/* ---- scenarios ---- */

static void pipes(void) {
    int p[2];
    if (pipe(p) < 0)
        exit(1);
    interrupted_read("pipe read", p[0], p[1], "x", 1);

    /* Nobody reads: a big write fills the pipe, then returns what it wrote. */
    static char big[100000];
    memset(big, 'w', sizeof big);
    alarm_writing(0, -1, NULL, 0);
    ssize_t r = write(p[1], big, sizeof big);
    report("pipe write, partial", r, errno);
    /* The pipe is full: a small write moves nothing before the signal. */
    alarm_writing(0, -1, NULL, 0);
    r = write(p[1], big, 100);
    report("pipe write, full", r, errno);
    /* With SA_RESTART it starts again after a handler that makes room. */
    alarm_reading(1, p[0], 4096);
    r = write(p[1], big, 100);
    report("pipe write, full, SA_RESTART", r, errno);
    close(p[0]);
    close(p[1]);

    /* A partial write is not restarted. */
    if (pipe(p) < 0)
        exit(1);
    alarm_writing(1, -1, NULL, 0);
    r = write(p[1], big, sizeof big);
    report("pipe write, partial, SA_RESTART", r, errno);
    close(p[0]);
    close(p[1]);
}

static void eventfds(void) {
    int efd = eventfd(0, 0);
    uint64_t one = 1, value = 0;
    char label[64];
    for (int restart = 0; restart < 2; restart++) {
        snprintf(label, sizeof label, "eventfd read%s", restart ? ", SA_RESTART" : "");
        alarm_writing(restart, efd, &one, sizeof one);
        ssize_t r = read(efd, &value, sizeof value);
        report(label, r, errno);
        if (r < 0) {
            r = read(efd, &value, sizeof value);
            report("  next read", r, errno);
        }
        printf("  value %llu\n", (unsigned long long)value);
    }
    /* At the counter's maximum a write waits for a reader. */
    uint64_t most = 0xfffffffffffffffeULL;
    if (write(efd, &most, sizeof most) != sizeof most)
        exit(1);
    alarm_writing(0, -1, NULL, 0);
    ssize_t r = write(efd, &one, sizeof one);
    report("eventfd write", r, errno);
    alarm_reading(1, efd, 8);
    r = write(efd, &one, sizeof one);
    report("eventfd write, SA_RESTART", r, errno);
    close(efd);
}

static void ptys(void) {
    int m, s;
    if (openpty(&m, &s, NULL, NULL, NULL) < 0)
        exit(1);
    interrupted_read("pty slave read", s, m, "x\n", 2);

    /* Raw mode, VMIN 5: a read that got 2 bytes returns them. */
    struct termios t;
    tcgetattr(s, &t);
    cfmakeraw(&t);
    t.c_cc[VMIN] = 5;
    t.c_cc[VTIME] = 0;
    tcsetattr(s, TCSANOW, &t);
    if (write(m, "ab", 2) != 2)
        exit(1);
    char buf[64];
    alarm_writing(1, -1, NULL, 0);
    ssize_t r = read(s, buf, sizeof buf);
    report("pty raw read, partial, SA_RESTART", r, errno);

    /* Nobody reads the slave: the master's writes fill its input. */
    static char big[20000];
    memset(big, 'w', sizeof big);
    alarm_writing(0, -1, NULL, 0);
    r = write(m, big, sizeof big);
    printf("pty write: partial=%d alarms=%d\n", r > 0 && r < (ssize_t)sizeof big,
           alarms);
    /* Linux moves input on from a worker thread, which may make room
       for a few more bytes; one write finally waits, and fails. */
    alarm_writing(0, -1, NULL, 0);
    do
        r = write(m, big, 1);
    while (r == 1);
    report("pty write, full", r, errno);
    close(s);
    close(m);
}

static void console(void) {
    /* Standard input is a pipe nobody writes to. The first alarm's handler
       has SA_RESTART, so the read starts again; the second's has not. */
    alarm_writing(1, -1, NULL, 0);
    then_plain = 1;
    char buf[64];
    ssize_t r = read(0, buf, sizeof buf);
    report("console read", r, errno);
}

/* ---- keyboard signals on a controlling terminal ---- */

static volatile sig_atomic_t counts[NSIG], codes[NSIG];
static char order[32];
static volatile sig_atomic_t ordered;

static void on_signal(int sig, siginfo_t *info, void *uc) {
    (void)uc;
    counts[sig]++;
    codes[sig] = info->si_code;
    if ((sig == SIGHUP || sig == SIGCONT) && ordered < (int)sizeof order - 1)
        order[ordered++] = sig == SIGHUP ? 'H' : 'C';
}

static void catch(int sig, int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

static void show(const char *label, const char *data, ssize_t n) {
    printf("%s: ", label);
    if (n < 0) {
        printf("-1 %s\n", strerrorname_np(errno));
        return;
    }
    printf("%zd \"", n);
    for (ssize_t i = 0; i < n; i++) {
        unsigned char c = data[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"')
            putchar(c);
        else
            printf("\\x%02x", c);
    }
    printf("\"\n");
}

/* Everything the master can read until it stays quiet for 100 ms. */
static void drain(const char *label, int fd) {
    char buf[512];
    ssize_t got = 0;
    struct pollfd p = {fd, POLLIN, 0};
    while (got < (ssize_t)sizeof buf && poll(&p, 1, 100) > 0 && (p.revents & POLLIN)) {
        ssize_t n = read(fd, buf + got, sizeof buf - got);
        if (n <= 0)
            break;
        got += n;
    }
    show(label, buf, got);
}

static void put(int fd, const char *s) {
    if (write(fd, s, strlen(s)) != (ssize_t)strlen(s))
        printf("short write: %s\n", strerrorname_np(errno));
}

/* Wait with `sig` unblocked until its handler ran. */
static void await(int sig, const sigset_t *blocked) {
    sigset_t during = *blocked;
    sigdelset(&during, sig);
    int before = counts[sig];
    while (counts[sig] == before)
        sigsuspend(&during);
    printf("%s: count=%d code=%d\n", sigabbrev_np(sig), counts[sig], codes[sig]);
}

static int master;

/* Types ^C, then a line. It blocks SIGINT itself, so that the reader is
   the thread that takes it. */
static void *typist(void *arg) {
    (void)arg;
    sigset_t own;
    sigemptyset(&own);
    sigaddset(&own, SIGINT);
    pthread_sigmask(SIG_BLOCK, &own, NULL);
    usleep(200000);
    put(master, "\x03");
    usleep(200000);
    put(master, "ok\n");
    return NULL;
}

static void keyboard(void) {
    /* Natively this makes a session without a controlling terminal; in the
       VM the program already leads its session (EPERM). */
    setsid();
    int m, s;
    if (openpty(&m, &s, NULL, NULL, NULL) < 0)
        exit(1);
    master = m;
    printf("TIOCSCTTY: %d\n", ioctl(s, TIOCSCTTY, 0));
    int sigs[] = {SIGINT, SIGQUIT, SIGTSTP, SIGWINCH, SIGHUP, SIGCONT};
    for (unsigned i = 0; i < sizeof sigs / sizeof *sigs; i++)
        catch(sigs[i], 0);
    sigset_t blocked, old;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGQUIT);
    sigaddset(&blocked, SIGTSTP);
    sigprocmask(SIG_BLOCK, &blocked, &old);
    char buf[64];

    /* ^C drops the line typed so far, echoes as ^C, and signals us. */
    put(m, "abc\x03");
    await(SIGINT, &blocked);
    drain("echo of abc^C", m);
    put(m, "def\n");
    show("line after ^C", buf, read(s, buf, sizeof buf));
    drain("echo of def", m);
    put(m, "\x1c");
    await(SIGQUIT, &blocked);
    drain("echo of ^\\", m);
    put(m, "\x1a");
    await(SIGTSTP, &blocked);
    drain("echo of ^Z", m);

    /* NOFLSH keeps the line; without ISIG ^C is an ordinary byte. */
    struct termios t, saved;
    tcgetattr(s, &saved);
    t = saved;
    t.c_lflag |= NOFLSH;
    tcsetattr(s, TCSANOW, &t);
    put(m, "ab\x03" "c\n");
    await(SIGINT, &blocked);
    show("line with NOFLSH", buf, read(s, buf, sizeof buf));
    t = saved;
    t.c_lflag &= ~ISIG;
    tcsetattr(s, TCSANOW, &t);
    put(m, "\x03\n");
    show("line without ISIG", buf, read(s, buf, sizeof buf));
    sigset_t pending;
    sigpending(&pending);
    printf("SIGINT pending without ISIG: %d\n", sigismember(&pending, SIGINT));
    tcsetattr(s, TCSANOW, &saved);
    drain("echoes", m);

    /* TIOCSIG on the master. */
    printf("TIOCSIG: %d\n", ioctl(m, TIOCSIG, SIGINT));
    await(SIGINT, &blocked);
    sigprocmask(SIG_SETMASK, &old, NULL);

    /* ^C typed by another thread ends a read blocked on the slave, or
       restarts it under SA_RESTART. */
    for (int restart = 0; restart < 2; restart++) {
        catch(SIGINT, restart ? SA_RESTART : 0);
        pthread_t thread;
        pthread_create(&thread, NULL, typist, NULL);
        ssize_t r = read(s, buf, sizeof buf);
        show(restart ? "read with ^C typed, SA_RESTART" : "read with ^C typed", buf, r);
        if (r < 0)
            show("  next read", buf, read(s, buf, sizeof buf));
        pthread_join(thread, NULL);
        printf("  SIGINT count=%d\n", counts[SIGINT]);
        drain("  echoes", m);
    }

    /* A resize that changes the size sends SIGWINCH. */
    struct winsize w = {24, 80, 0, 0};
    ioctl(m, TIOCSWINSZ, &w);
    ioctl(m, TIOCSWINSZ, &w);
    w.ws_col = 100;
    ioctl(s, TIOCSWINSZ, &w);
    printf("SIGWINCH: count=%d code=%d\n", counts[SIGWINCH], codes[SIGWINCH]);

    /* Closing the master hangs the session up: SIGHUP, then SIGCONT. */
    sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    sigaddset(&hup, SIGCONT);
    sigprocmask(SIG_BLOCK, &hup, NULL);
    close(m);
    sigpending(&pending);
    printf("pending after the master closed: SIGHUP %d SIGCONT %d\n",
           sigismember(&pending, SIGHUP), sigismember(&pending, SIGCONT));
    sigprocmask(SIG_UNBLOCK, &hup, NULL);
    printf("handlers ran: %s, SIGHUP code=%d SIGCONT code=%d\n", order, codes[SIGHUP],
           codes[SIGCONT]);
    show("slave read after the hang-up", buf, read(s, buf, sizeof buf));
    close(s);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "pipes"))
        pipes();
    else if (!strcmp(what, "eventfds"))
        eventfds();
    else if (!strcmp(what, "ptys"))
        ptys();
    else if (!strcmp(what, "console"))
        console();
    else if (!strcmp(what, "keyboard"))
        keyboard();
    else {
        printf("unknown scenario %s\n", what);
        return 2;
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("signal-waits")
    source = work / "waits.c"
    source.write_text(WAITS_C)
    built = {}
    for variant, command in VARIANTS.items():
        output = work / f"waits-{variant}"
        subprocess.run([*command, "-O1", "-o", str(output), str(source)], check=True)
        built[variant] = output
    return built


@pytest.fixture(scope="module")
def image(programs: dict[str, Path]) -> Path:
    path = next(iter(programs.values())).parent / "waits.img"
    host = [
        arg for program in programs.values() for arg in ("--from-host", str(program))
    ]
    built = osv("build", "--fs", "ramfs", "--format", "raw", "-o", str(path),
                *host, "--cmdline", "/bin/true")  # fmt: skip
    assert built.returncode == 0, built.stderr
    return path


def same_in_vm_and_natively(image: Path, program: Path, scenario: str) -> str:
    """Run ``program scenario`` in the VM and natively, standard input a pipe
    that stays open and empty; both must print the same. Returns the output."""
    read_end, write_end = os.pipe()
    try:
        vm = osv("run", str(image), "-e", f"{program} {scenario}", stdin=read_end)
        expected = native([str(program), scenario], stdin=read_end, timeout=60)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert expected.returncode == 0, expected.stdout + expected.stderr
    assert program_output(vm.stdout) == expected.stdout, vm.stderr[-3000:]
    assert vm.returncode == 0
    return expected.stdout


@vm_test
@pytest.mark.parametrize("variant", VARIANTS)
def test_pipe_waits_end_with_eintr_a_partial_count_or_a_restart(
    image: Path, programs: dict[str, Path], variant: str
) -> None:
    out = same_in_vm_and_natively(image, programs[variant], "pipes")
    assert out == (
        "pipe read: -1 EINTR alarms=1\n"
        "  next read: 1 alarms=1\n"
        "pipe read, SA_RESTART: 1 alarms=1\n"
        "pipe write, partial: 65536 alarms=1\n"
        "pipe write, full: -1 EINTR alarms=1\n"
        "pipe write, full, SA_RESTART: 100 alarms=1\n"
        "pipe write, partial, SA_RESTART: 65536 alarms=1\n"
    )


@vm_test
@pytest.mark.parametrize("variant", VARIANTS)
def test_eventfd_waits_end_with_eintr_or_a_restart(
    image: Path, programs: dict[str, Path], variant: str
) -> None:
    out = same_in_vm_and_natively(image, programs[variant], "eventfds")
    assert "eventfd read: -1 EINTR alarms=1\n  next read: 8" in out
    assert "eventfd read, SA_RESTART: 8 alarms=1" in out
    assert "eventfd write: -1 EINTR alarms=1" in out
    assert "eventfd write, SA_RESTART: 8 alarms=1" in out


@vm_test
@pytest.mark.parametrize("variant", VARIANTS)
def test_pty_waits_end_with_eintr_a_partial_count_or_a_restart(
    image: Path, programs: dict[str, Path], variant: str
) -> None:
    out = same_in_vm_and_natively(image, programs[variant], "ptys")
    assert "pty slave read: -1 EINTR alarms=1\n  next read: 2" in out
    assert "pty slave read, SA_RESTART: 2 alarms=1" in out
    assert "pty raw read, partial, SA_RESTART: 2 alarms=1" in out
    assert "pty write: partial=1 alarms=1" in out
    assert "pty write, full: -1 EINTR alarms=1" in out


@vm_test
def test_console_read_restarts_under_sa_restart_then_ends_with_eintr(
    image: Path, programs: dict[str, Path]
) -> None:
    out = same_in_vm_and_natively(image, programs["static"], "console")
    assert out == "console read: -1 EINTR alarms=2\n"


@vm_test
@pytest.mark.parametrize("variant", VARIANTS)
def test_controlling_pty_sends_keyboard_resize_and_hangup_signals(
    image: Path, programs: dict[str, Path], variant: str
) -> None:
    out = same_in_vm_and_natively(image, programs[variant], "keyboard")
    # si_code 128 is SI_KERNEL: the terminal sends these, not a process.
    assert "INT: count=1 code=128\n" in out
    assert 'echo of abc^C: 2 "^C"\nline after ^C: 4 "def\\x0a"' in out
    assert "QUIT: count=1 code=128" in out
    assert "TSTP: count=1 code=128" in out
    assert 'line with NOFLSH: 4 "abc\\x0a"' in out
    assert "SIGINT pending without ISIG: 0" in out
    assert "TIOCSIG: 0\nINT: count=3 code=128" in out
    assert 'read with ^C typed: -1 EINTR\n  next read: 3 "ok\\x0a"' in out
    assert 'read with ^C typed, SA_RESTART: 3 "ok\\x0a"' in out
    assert "SIGWINCH: count=2 code=128" in out
    assert "pending after the master closed: SIGHUP 1 SIGCONT 1" in out
    # Both frames are built before either handler runs: the last on top.
    assert "handlers ran: CH, SIGHUP code=128 SIGCONT code=128" in out


# ---- the VFS objects directly (no VM) ----------------------------------------


class _VCpu:
    """What signal sending and `interrupted` ask of a vCPU."""

    def __init__(self) -> None:
        self.kicks = 0

    def kick(self) -> None:
        self.kicks += 1

    def reg(self, name: str) -> int:
        assert name == "rax"
        return 0  # the number of read(2)


def _guest_thread(handler_flags: int = 0) -> Task:
    """A task of a program that catches SIGUSR1, for a host thread to pose as."""
    process = Process(1, ["waits"], [], "/waits", None, None, None, None, None)
    task = Task(1, process, _VCpu())
    process.tasks.append(task)
    action = SigAction(handler=0x401000, flags=SA_RESTORER | handler_flags)
    set_action(process, SIGUSR1, action)
    return task


def _call_as(task: Task, call) -> dict:  # noqa: ANN001
    """Start ``call()`` in a host thread serving ``task``; return once the
    call waits (its waker is registered). `_finish` gives its outcome."""
    outcome: dict = {}

    def run() -> None:
        set_current_task(task)
        try:
            outcome["result"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    outcome["thread"] = thread
    deadline = time.monotonic() + 10
    while task.waker is None:
        assert thread.is_alive(), outcome
        assert time.monotonic() < deadline, "the call never waited"
        time.sleep(0.01)
    return outcome


def _signal(task: Task) -> None:
    KERNEL_LOCK.acquire()
    try:
        send_to_process(task.process, SIGUSR1, siginfo(SIGUSR1, SI_USER))
    finally:
        KERNEL_LOCK.release()


def _finish(outcome: dict) -> object:
    outcome["thread"].join(5)
    assert not outcome["thread"].is_alive(), "the wait was not cut short"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def test_signal_ends_a_pipe_read_with_eintr_marked_for_restart() -> None:
    task = _guest_thread(SA_RESTART)
    read_end, write_end = make_pipe()
    waiting = _call_as(task, lambda: read_end.read(10))

    _signal(task)
    with pytest.raises(FsError) as caught:
        _finish(waiting)
    assert caught.value.errno == errno.EINTR
    # The slow path restarts the call (number 0) when the handler allows it.
    assert task.restart == (0, True)
    assert task.waker is None


def test_signal_ends_a_pipe_write_with_what_it_wrote() -> None:
    task = _guest_thread()
    read_end, write_end = make_pipe()
    waiting = _call_as(task, lambda: write_end.write(b"w" * 100_000))

    _signal(task)
    assert _finish(waiting) == 65536
    assert task.restart is None


def test_signal_ends_an_eventfd_read() -> None:
    task = _guest_thread()
    counter = EventFile(0, 0, semaphore=False)
    waiting = _call_as(task, lambda: counter.read(8))

    _signal(task)
    with pytest.raises(FsError) as caught:
        _finish(waiting)
    assert caught.value.errno == errno.EINTR


def test_signal_ends_a_console_read_waiting_on_the_host() -> None:
    task = _guest_thread()
    host_read, host_write = os.pipe()
    try:
        console = Console(host_read, host_write)
        waiting = _call_as(task, lambda: console.read(10))

        _signal(task)
        with pytest.raises(FsError) as caught:
            _finish(waiting)
        assert caught.value.errno == errno.EINTR
    finally:
        os.close(host_read)
        os.close(host_write)


def test_the_programs_end_releases_a_thread_waiting_on_a_pty() -> None:
    task = _guest_thread()
    vfs = Vfs()
    vfs.mount(RamFs(), "none", "/")
    vfs.mkdir("/dev")
    devfs = DevFs()
    devfs.attach_ptys()
    vfs.mount(devfs, "none", "/dev")
    master = vfs.open("/dev/ptmx", O_RDWR)
    master.ioctl(0x40045431, (0).to_bytes(4, "little"))  # TIOCSPTLCK(0)
    slave = master.open_peer(O_RDWR | O_NOCTTY)
    waiting = _call_as(task, lambda: slave.read(10))

    # What the kernel does when a program ends: mark it, then kick each thread.
    task.process.ended.set()
    kick(task)
    with pytest.raises(ThreadExit):
        _finish(waiting)
    slave.close()
    master.close()


def test_waits_outside_a_guest_thread_are_not_interruptible() -> None:
    read_end, write_end = make_pipe()
    threading.Timer(0.05, write_end.write, args=(b"late",)).start()
    assert read_end.read(10) == b"late"
