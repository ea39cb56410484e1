"""Pseudo-terminals in the VM (/dev/ptmx, /dev/pts, the N_TTY line discipline)
behave as on Linux: the same programs print the same lines in both places."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from guest import native, osv, program_output

from osv.vfs import (
    O_NOCTTY,
    O_RDWR,
    POLLHUP,
    POLLIN,
    POLLOUT,
    DevFs,
    FsError,
    PtyMasterFile,
    RamFs,
    Vfs,
)

# The VM tests boot VMs (/dev/kvm), compile with gcc, and compare with the
# host's own ptys (/dev/ptmx).
vm_test = pytest.mark.skipif(
    not (os.path.exists("/dev/kvm") and os.path.exists("/dev/ptmx"))
    or shutil.which("gcc") is None,
    reason="needs /dev/kvm, /dev/ptmx and gcc",
)

# /usr/bin/python3.11 brings its standard library in /usr/lib/python3.11,
# termios and select included (test_dynamic_programs.py uses the same).
PYTHON = "/usr/bin/python3.11"
STDLIB = "/usr/lib/python3.11"

# One program, one scenario per argument. Each prints what it observes in a
# form that does not depend on the machine (pty numbers, pids), so the VM's
# output can be compared with a native run line for line.
PTY_CHECK_C = r"""
/* Pseudo-terminal behaviours, printed so a VM run can be compared with Linux. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static int master, slave;
static unsigned ptn;

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

static void result(const char *label, int rc) {
    if (rc < 0)
        printf("%s: -1 %s\n", label, strerrorname_np(errno));
    else
        printf("%s: %d\n", label, rc);
}

/* What a read gets when poll says the fd is readable within 200 ms. */
static void drain(const char *label, int fd) {
    char buf[512];
    struct pollfd p = {fd, POLLIN, 0};
    int ready = poll(&p, 1, 200);
    if (ready <= 0 || !(p.revents & POLLIN)) {
        printf("%s: nothing (revents %#x)\n", label, p.revents);
        return;
    }
    show(label, buf, read(fd, buf, sizeof buf));
}

static int revents(int fd, short events) {
    struct pollfd p = {fd, events, 0};
    poll(&p, 1, 0);
    return p.revents;
}

static void put(int fd, const char *s) {
    if (write(fd, s, strlen(s)) != (ssize_t)strlen(s))
        printf("short write: %s\n", strerrorname_np(errno));
}

static void open_pair(void) {
    if (openpty(&master, &slave, NULL, NULL, NULL) < 0) {
        printf("openpty: %s\n", strerrorname_np(errno));
        exit(1);
    }
    ioctl(master, TIOCGPTN, &ptn);
}

static void close_pair(void) {
    close(slave);
    close(master);
}

static void set_lflag(int on, int off) {
    struct termios t;
    tcgetattr(slave, &t);
    t.c_lflag = (t.c_lflag | on) & ~off;
    tcsetattr(slave, TCSANOW, &t);
}

static void set_oflag(int on, int off) {
    struct termios t;
    tcgetattr(slave, &t);
    t.c_oflag = (t.c_oflag | on) & ~off;
    tcsetattr(slave, TCSANOW, &t);
}

static void identity(void) {
    char expected[64], link[128], path[64];
    struct stat sm, ss;
    open_pair();
    snprintf(expected, sizeof expected, "/dev/pts/%u", ptn);
    printf("isatty: master %d slave %d\n", isatty(master), isatty(slave));
    printf("ptsname matches TIOCGPTN: %d\n", strcmp(ptsname(master), expected) == 0);
    printf("ttyname(slave) matches: %d\n", strcmp(ttyname(slave), expected) == 0);
    printf("ttyname(master): %s\n", ttyname(master));
    fstat(master, &sm);
    fstat(slave, &ss);
    printf("master: chr %d rdev %u:%u\n", S_ISCHR(sm.st_mode), major(sm.st_rdev),
           minor(sm.st_rdev));
    printf("slave: chr %d major %u minor is TIOCGPTN %d nlink %lu\n", S_ISCHR(ss.st_mode),
           major(ss.st_rdev), minor(ss.st_rdev) == ptn, (unsigned long)ss.st_nlink);
    struct stat byname;
    stat(expected, &byname);
    printf("stat(ptsname) is the slave: %d\n", byname.st_rdev == ss.st_rdev);
    int listed = 0;
    DIR *d = opendir("/dev/pts");
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, expected + 9) == 0)
            listed = e->d_type == DT_CHR;
    closedir(d);
    printf("/dev/pts lists it: %d\n", listed);
    struct termios t;
    tcgetattr(slave, &t);
    printf("termios: iflag %#o oflag %#o cflag %#o lflag %#o\n", t.c_iflag, t.c_oflag,
           t.c_cflag, t.c_lflag);
    printf("cc:");
    for (int i = 0; i < NCCS; i++)
        printf(" %d", t.c_cc[i]);
    printf("\nspeed: %d %d\n", (int)cfgetispeed(&t), (int)cfgetospeed(&t));
    struct winsize w = {0}, back = {0};
    ioctl(slave, TIOCGWINSZ, &w);
    printf("winsize at start: %d %d %d %d\n", w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel);
    w.ws_row = 24;
    w.ws_col = 80;
    w.ws_xpixel = 640;
    w.ws_ypixel = 480;
    result("TIOCSWINSZ on master", ioctl(master, TIOCSWINSZ, &w));
    ioctl(slave, TIOCGWINSZ, &back);
    printf("winsize on slave: %d %d %d %d\n", back.ws_row, back.ws_col, back.ws_xpixel,
           back.ws_ypixel);
    w.ws_row = 50;
    result("TIOCSWINSZ on slave", ioctl(slave, TIOCSWINSZ, &w));
    ioctl(master, TIOCGWINSZ, &back);
    printf("winsize on master: %d %d\n", back.ws_row, back.ws_col);
    result("lseek on slave", (int)lseek(slave, 0, SEEK_SET));
    int outq = -1;
    result("TIOCOUTQ", ioctl(slave, TIOCOUTQ, &outq));
    printf("outq %d\n", outq);
    snprintf(path, sizeof path, "/proc/self/fd/%d", slave);
    close(master);
    ssize_t n = readlink(path, link, sizeof link - 1);
    link[n > 0 ? n : 0] = 0;
    printf("slave link after master close ends in (deleted): %d\n",
           n > 10 && strstr(link, " (deleted)") != NULL);
    result("stat(ptsname) after master close", stat(expected, &byname));
    fstat(slave, &ss);
    printf("slave nlink after master close: %lu\n", (unsigned long)ss.st_nlink);
    close(slave);
}

static void raw_mode(void) {
    struct termios t;
    open_pair();
    tcgetattr(slave, &t);
    cfmakeraw(&t);
    tcsetattr(slave, TCSANOW, &t);
    put(master, "hello\r\nworld\x03\x7f\x04\x1a\x13!");
    drain("slave reads", slave);
    drain("master reads (no echo)", master);
    put(slave, "x\ny\r\n");
    drain("master reads slave output", master);
    /* VMIN 3: poll and read wait for three bytes. */
    t.c_cc[VMIN] = 3;
    t.c_cc[VTIME] = 0;
    tcsetattr(slave, TCSANOW, &t);
    put(master, "ab");
    printf("MIN 3 with 2 bytes: POLLIN %d\n", !!(revents(slave, POLLIN) & POLLIN));
    int count = -1;
    ioctl(slave, FIONREAD, &count);
    printf("FIONREAD %d\n", count);
    put(master, "cd");
    printf("MIN 3 with 4 bytes: POLLIN %d\n", !!(revents(slave, POLLIN) & POLLIN));
    char buf[64];
    show("read with MIN 3", buf, read(slave, buf, sizeof buf));
    /* VMIN 0 VTIME 0: a read returns at once. */
    t.c_cc[VMIN] = 0;
    tcsetattr(slave, TCSANOW, &t);
    show("read with MIN 0 TIME 0", buf, read(slave, buf, sizeof buf));
    /* VMIN 0 VTIME 2: a read gives up after 0.2 s. */
    t.c_cc[VTIME] = 2;
    tcsetattr(slave, TCSANOW, &t);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    show("read with MIN 0 TIME 2", buf, read(slave, buf, sizeof buf));
    clock_gettime(CLOCK_MONOTONIC, &b);
    double waited = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    printf("waited about 0.2 s: %d\n", waited > 0.15 && waited < 1.5);
    close_pair();
}

static void canonical(void) {
    char buf[64];
    open_pair();
    set_lflag(0, ECHO);
    put(master, "line one\rpartial");
    printf("POLLIN with a line: %d\n", !!(revents(slave, POLLIN) & POLLIN));
    show("first read", buf, read(slave, buf, sizeof buf));
    printf("POLLIN with a partial line: %d\n", !!(revents(slave, POLLIN) & POLLIN));
    int count = -1;
    ioctl(slave, FIONREAD, &count);
    printf("FIONREAD %d\n", count);
    put(master, "\x04");
    show("after EOF char", buf, read(slave, buf, sizeof buf));
    put(master, "\x04");
    show("EOF on empty line", buf, read(slave, buf, sizeof buf));
    put(master, "abc\x7f" "d\n");
    show("erase", buf, read(slave, buf, sizeof buf));
    put(master, "xyz\x15ok\n");
    show("kill", buf, read(slave, buf, sizeof buf));
    put(master, "foo bar\x17" "baz\n");
    show("word erase", buf, read(slave, buf, sizeof buf));
    put(master, "a\x16\x7f" "b\n");
    show("literal next", buf, read(slave, buf, sizeof buf));
    put(master, "two\nlines\n");
    show("one line per read", buf, read(slave, buf, sizeof buf));
    show("then the next", buf, read(slave, buf, 3));
    show("and its rest", buf, read(slave, buf, sizeof buf));
    struct termios t;
    tcgetattr(slave, &t);
    t.c_cc[VEOL] = ';';
    tcsetattr(slave, TCSANOW, &t);
    put(master, "one;two\n");
    show("VEOL ends a line", buf, read(slave, buf, sizeof buf));
    show("rest", buf, read(slave, buf, sizeof buf));
    put(master, "keep");
    t.c_lflag &= ~ICANON;
    tcsetattr(slave, TCSANOW, &t);
    show("partial line after leaving ICANON", buf, read(slave, buf, sizeof buf));
    t.c_lflag |= ICANON;
    t.c_iflag &= ~ICRNL;
    tcsetattr(slave, TCSANOW, &t);
    put(master, "cr\r\n");
    show("without ICRNL", buf, read(slave, buf, sizeof buf));
    t.c_iflag |= IGNCR;
    tcsetattr(slave, TCSANOW, &t);
    put(master, "ig\rnored\n");
    show("IGNCR", buf, read(slave, buf, sizeof buf));
    put(master, "flushed\n");
    tcflush(slave, TCIFLUSH);
    printf("POLLIN after TCIFLUSH: %d\n", !!(revents(slave, POLLIN) & POLLIN));
    close_pair();
}

static void echo(void) {
    open_pair();
    put(master, "hi\n");
    drain("echo of a line", master);
    put(master, "a\x01" "b\t\n");
    drain("echo of control chars", master);
    put(master, "ab\x7f\n");
    drain("ECHOE erase", master);
    put(master, "ab\t\x7f\n");
    drain("erase of a tab", master);
    put(master, "kill me\x15\n");
    drain("ECHOKE kill", master);
    put(master, "word\x12");
    drain("reprint", master);
    put(master, "\n");
    drain("after reprint", master);
    set_lflag(0, ECHOCTL);
    put(master, "a\x01" "b\n");
    drain("without ECHOCTL", master);
    set_lflag(0, ECHOE);
    put(master, "ab\x7f\n");
    drain("erase without ECHOE", master);
    set_lflag(ECHOPRT | ECHOE, 0);
    put(master, "abc\x7f\x7f" "d\n");
    drain("ECHOPRT erase", master);
    set_lflag(0, ECHOPRT);
    set_lflag(0, ECHOKE);
    put(master, "kill\x15\n");
    drain("kill without ECHOKE", master);
    set_lflag(0, ECHO);
    put(master, "silent\n");
    drain("echo off", master);
    set_lflag(ECHONL, 0);
    put(master, "nl only\n");
    drain("ECHONL", master);
    set_lflag(ECHO | ECHOCTL, ECHONL | ICANON);
    put(master, "r\x01\n");
    drain("raw echo", master);
    set_lflag(ICANON | ECHOKE | ECHOE, 0);
    tcflush(slave, TCIFLUSH);
    put(master, "abc\x03");
    drain("ISIG interrupt echo", master);
    printf("input flushed by ^C: %d\n", !(revents(slave, POLLIN) & POLLIN));
    put(master, "def\n");
    char buf[64];
    show("line after ^C", buf, read(slave, buf, sizeof buf));
    close_pair();
}

static void output(void) {
    open_pair();
    put(slave, "a\nb\n");
    drain("ONLCR", master);
    set_oflag(0, ONLCR);
    put(slave, "a\nb\n");
    drain("no ONLCR", master);
    set_oflag(OCRNL, 0);
    put(slave, "x\ry");
    drain("OCRNL", master);
    set_oflag(ONOCR, OCRNL);
    put(slave, "\rab\r");
    drain("ONOCR", master);
    set_oflag(XTABS | ONLCR, ONOCR);
    put(slave, "ab\tc\td\n");
    drain("XTABS", master);
    set_oflag(OLCUC, XTABS);
    put(slave, "abc\n");
    drain("OLCUC", master);
    set_oflag(0, OPOST);
    put(slave, "a\nb\n");
    drain("no OPOST", master);
    close_pair();
}

static void hangup(void) {
    char buf[64];
    open_pair();
    printf("master revents before: %#x\n", revents(master, POLLIN | POLLOUT));
    put(slave, "bye\n");
    close(slave);
    printf("master revents after slave close: %#x\n", revents(master, POLLIN | POLLOUT));
    show("master reads what is left", buf, read(master, buf, sizeof buf));
    show("then", buf, read(master, buf, sizeof buf));
    result("master write after slave close", (int)write(master, "x", 1));
    close(master);

    open_pair();
    close(master);
    printf("slave revents after master close: %#x\n", revents(slave, POLLIN | POLLOUT));
    show("slave read after master close", buf, read(slave, buf, sizeof buf));
    result("slave write after master close", (int)write(slave, "x", 1));
    struct termios t;
    result("tcgetattr after master close", tcgetattr(slave, &t));
    printf("isatty after master close: %d\n", isatty(slave));
    close(slave);

    /* The freed index is handed out again. */
    unsigned first, again;
    open_pair();
    first = ptn;
    close_pair();
    open_pair();
    again = ptn;
    printf("index reused: %d\n", first == again);
    close_pair();
}

static void *late_writer(void *arg) {
    (void)arg;
    usleep(100000);
    put(master, "late\n");
    return NULL;
}

static void readiness(void) {
    char buf[64];
    open_pair();
    printf("fresh master: %#x slave: %#x\n", revents(master, POLLIN | POLLOUT),
           revents(slave, POLLIN | POLLOUT));
    fcntl(slave, F_SETFL, O_NONBLOCK);
    fcntl(master, F_SETFL, O_NONBLOCK);
    show("nonblocking slave read", buf, read(slave, buf, sizeof buf));
    show("nonblocking master read", buf, read(master, buf, sizeof buf));
    fcntl(slave, F_SETFL, 0);
    fcntl(master, F_SETFL, 0);
    set_lflag(0, ECHO);
    put(master, "x");
    printf("slave after a partial line: %#x\n", revents(slave, POLLIN));
    put(master, "\n");
    printf("slave after the newline: %#x\n", revents(slave, POLLIN));
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(slave, &rd);
    struct timeval tv = {0, 0};
    printf("select: %d slave set %d\n", select(slave + 1, &rd, NULL, NULL, &tv),
           FD_ISSET(slave, &rd));
    read(slave, buf, sizeof buf);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 7}, got;
    epoll_ctl(ep, EPOLL_CTL_ADD, master, &ev);
    printf("epoll before output: %d\n", epoll_wait(ep, &got, 1, 0));
    put(slave, "out\n");
    int n = epoll_wait(ep, &got, 1, 1000);
    printf("epoll after output: %d events %#x data %u\n", n, got.events, got.data.u32);
    close(ep);
    pthread_t th;
    pthread_create(&th, NULL, late_writer, NULL);
    show("blocking read", buf, read(slave, buf, sizeof buf));
    pthread_join(th, NULL);
    close_pair();
}

static void locking(void) {
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    int locked = -1;
    result("grantpt", grantpt(m));
    ioctl(m, TIOCGPTLCK, &locked);
    printf("locked at first: %d\n", locked);
    result("open while locked", open(ptsname(m), O_RDWR | O_NOCTTY));
    result("TIOCGPTPEER while locked", ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY));
    result("unlockpt", unlockpt(m));
    int s = open(ptsname(m), O_RDWR | O_NOCTTY);
    printf("open after unlock: %d\n", s >= 0);
    unsigned n;
    result("TIOCGPTN on the slave", ioctl(s, TIOCGPTN, &n));
    result("TIOCGPTPEER on the slave", ioctl(s, TIOCGPTPEER, O_RDWR));
    int peer = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    printf("TIOCGPTPEER: fd %d cloexec %d\n", peer >= 0, fcntl(peer, F_GETFD));
    int null = open("/dev/null", O_RDWR);
    result("TIOCGPTPEER on /dev/null", ioctl(null, TIOCGPTPEER, O_RDWR));
    result("TIOCGPTN on /dev/null", ioctl(null, TIOCGPTN, &n));
    result("ptsname on a slave", ptsname(s) ? 0 : -1);
    close(null);
    close(peer);
    close(s);
    close(m);
}

static void ctty(void) {
    signal(SIGHUP, SIG_IGN);
    setsid();
    open_pair();
    pid_t pgrp = 0;
    result("TIOCGPGRP on a slave that is not the terminal", ioctl(slave, TIOCGPGRP, &pgrp));
    pgrp = -5;
    result("TIOCGPGRP on its master", ioctl(master, TIOCGPGRP, &pgrp));
    printf("pgrp %d\n", pgrp);
    result("TIOCNOTTY while not the terminal", ioctl(slave, TIOCNOTTY));
    result("TIOCSCTTY", ioctl(slave, TIOCSCTTY, 0));
    result("TIOCSCTTY again", ioctl(slave, TIOCSCTTY, 0));
    result("TIOCGPGRP", ioctl(slave, TIOCGPGRP, &pgrp));
    printf("is our group: %d\n", pgrp == getpgrp());
    pgrp = 0;
    ioctl(master, TIOCGPGRP, &pgrp);
    printf("master reports our group: %d\n", pgrp == getpgrp());
    pid_t sid = 0;
    result("TIOCGSID", ioctl(slave, TIOCGSID, &sid));
    printf("is our session: %d\n", sid == getsid(0));
    printf("tcgetpgrp is ours: %d\n", tcgetpgrp(slave) == getpgrp());
    result("tcsetpgrp", tcsetpgrp(slave, getpgrp()));
    pid_t bad = -1;
    result("TIOCSPGRP -1", ioctl(slave, TIOCSPGRP, &bad));
    struct winsize w = {30, 100, 0, 0};
    result("resize the terminal", ioctl(master, TIOCSWINSZ, &w));
    result("TIOCNOTTY on the master", ioctl(master, TIOCNOTTY));
    result("TIOCNOTTY", ioctl(slave, TIOCNOTTY));
    result("TIOCGPGRP after TIOCNOTTY", ioctl(slave, TIOCGPGRP, &pgrp));
    int m2, s2;
    openpty(&m2, &s2, NULL, NULL, NULL);
    int s3 = open(ptsname(m2), O_RDWR);
    result("TIOCGPGRP of a slave opened without O_NOCTTY", ioctl(s3, TIOCGPGRP, &pgrp));
    printf("is our group: %d\n", pgrp == getpgrp());
    result("TIOCSCTTY of another pty", ioctl(slave, TIOCSCTTY, 0));
    result("TIOCSIG bad signal", ioctl(m2, TIOCSIG, SIGKILL));
    close(s3);
    close(s2);
    close(m2);
    close_pair();
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "identity"))
        identity();
    else if (!strcmp(what, "raw"))
        raw_mode();
    else if (!strcmp(what, "canonical"))
        canonical();
    else if (!strcmp(what, "echo"))
        echo();
    else if (!strcmp(what, "output"))
        output();
    else if (!strcmp(what, "hangup"))
        hangup();
    else if (!strcmp(what, "readiness"))
        readiness();
    else if (!strcmp(what, "locking"))
        locking();
    else if (!strcmp(what, "ctty"))
        ctty();
    else {
        printf("unknown scenario %s\n", what);
        return 2;
    }
    return 0;
}
"""

PY_OPENPTY = """
import errno, fcntl, os, select, struct, termios, tty
m, s = os.openpty()
print("isatty", os.isatty(m), os.isatty(s))
print("inheritable", os.get_inheritable(m), os.get_inheritable(s))
name = os.ttyname(s)
print("ttyname", name.startswith("/dev/pts/"), os.stat(name).st_rdev == os.fstat(s).st_rdev)
os.write(m, b"hello\\r")
print("slave", os.read(s, 100))
print("echo", os.read(m, 100))
attrs = termios.tcgetattr(s)
print("termios", [oct(flag) for flag in attrs[:4]], attrs[4:6], attrs[6][:5])
tty.setraw(s)
os.write(m, b"raw\\r\\x03")
print("raw", os.read(s, 100))
os.write(s, b"out\\n")
print("output", os.read(m, 100))
fcntl.ioctl(m, termios.TIOCSWINSZ, struct.pack("HHHH", 25, 100, 0, 0))
print("size", tuple(os.get_terminal_size(s)))
poller = select.poll()
poller.register(m, select.POLLIN)
print("poll", poller.poll(0))
os.write(s, b"bye")
os.close(s)
print("left", os.read(m, 100))
try:
    os.read(m, 100)
except OSError as err:
    print("then", errno.errorcode[err.errno])
os.close(m)
"""


@pytest.fixture(scope="module")
def pty_check(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("pty")
    source = work / "pty_check.c"
    source.write_text(PTY_CHECK_C)
    binary = work / "pty_check"
    subprocess.run(
        ["gcc", "-static", "-pthread", "-O1", "-o", str(binary), str(source)],
        check=True,
        capture_output=True,
    )
    return binary


@pytest.fixture(scope="module")
def pty_image(pty_check: Path) -> Path:
    image = pty_check.parent / "pty.img"
    built = osv("build", "--fs", "ramfs", "--format", "raw", "-o", str(image),
                "--from-host", str(pty_check), "--cmdline", "/bin/true")  # fmt: skip
    assert built.returncode == 0, built.stderr
    return image


def same_in_vm_and_natively(image: Path, program: Path, scenario: str) -> str:
    """Run ``program scenario`` in the VM and natively; both must print the
    same lines and exit alike. Returns the output."""
    vm = osv("run", str(image), "-e", f"{program} {scenario}")
    expected = native([str(program), scenario], timeout=60)
    assert expected.returncode == 0, expected.stdout + expected.stderr
    assert program_output(vm.stdout) == expected.stdout, vm.stderr[-3000:]
    assert vm.returncode == expected.returncode
    return expected.stdout


@vm_test
def test_openpty_gives_a_named_terminal_pair_with_linux_defaults(
    pty_image: Path, pty_check: Path
) -> None:
    out = same_in_vm_and_natively(pty_image, pty_check, "identity")
    assert "isatty: master 1 slave 1" in out
    assert "ttyname(slave) matches: 1" in out
    assert "master: chr 1 rdev 5:2" in out
    assert "slave: chr 1 major 136 minor is TIOCGPTN 1 nlink 1" in out
    # tty_std_termios: ICRNL|IXON, OPOST|ONLCR, B38400|CS8|CREAD, and
    # ISIG|ICANON|ECHO|ECHOE|ECHOK|ECHOCTL|ECHOKE|IEXTEN.
    assert "termios: iflag 02400 oflag 05 cflag 0277 lflag 0105073" in out
    assert "winsize on slave: 24 80 640 480" in out
    assert "stat(ptsname) after master close: -1 ENOENT" in out


@vm_test
def test_raw_mode_passes_bytes_through_and_honours_vmin_vtime(
    pty_image: Path, pty_check: Path
) -> None:
    out = same_in_vm_and_natively(pty_image, pty_check, "raw")
    assert 'slave reads: 18 "hello\\x0d\\x0aworld\\x03\\x7f\\x04\\x1a\\x13!"' in out
    assert "MIN 3 with 2 bytes: POLLIN 0" in out
    assert 'read with MIN 3: 4 "abcd"' in out
    assert "waited about 0.2 s: 1" in out


@vm_test
def test_canonical_mode_edits_lines_and_ends_them_at_eol_and_eof(
    pty_image: Path, pty_check: Path
) -> None:
    out = same_in_vm_and_natively(pty_image, pty_check, "canonical")
    assert 'first read: 9 "line one\\x0a"' in out
    assert 'after EOF char: 7 "partial"' in out
    assert 'EOF on empty line: 0 ""' in out
    assert 'word erase: 8 "foo baz\\x0a"' in out


@vm_test
def test_echo_follows_the_echo_flags(pty_image: Path, pty_check: Path) -> None:
    out = same_in_vm_and_natively(pty_image, pty_check, "echo")
    assert 'echo of control chars: 7 "a^Ab\\x09\\x0d\\x0a"' in out
    assert 'ECHOE erase: 7 "ab\\x08 \\x08\\x0d\\x0a"' in out
    assert "echo off: nothing" in out
    assert 'ISIG interrupt echo: 2 "^C"' in out


@vm_test
def test_output_processing_translates_newlines_tabs_and_case(
    pty_image: Path, pty_check: Path
) -> None:
    out = same_in_vm_and_natively(pty_image, pty_check, "output")
    assert 'ONLCR: 6 "a\\x0d\\x0ab\\x0d\\x0a"' in out
    assert 'no OPOST: 4 "a\\x0ab\\x0a"' in out


@vm_test
def test_closing_one_end_hangs_up_the_other(pty_image: Path, pty_check: Path) -> None:
    out = same_in_vm_and_natively(pty_image, pty_check, "hangup")
    assert 'master reads what is left: 5 "bye\\x0d\\x0a"' in out
    assert "then: -1 EIO" in out
    assert 'slave read after master close: 0 ""' in out
    assert "slave write after master close: -1 EIO" in out


@vm_test
def test_poll_select_epoll_and_blocking_reads_see_pty_readiness(
    pty_image: Path, pty_check: Path
) -> None:
    out = same_in_vm_and_natively(pty_image, pty_check, "readiness")
    assert "nonblocking slave read: -1 EAGAIN" in out
    assert "slave after a partial line: 0" in out
    assert "epoll after output: 1 events 0x1 data 7" in out
    assert 'blocking read: 5 "late\\x0a"' in out


@vm_test
def test_slave_stays_locked_until_unlockpt(pty_image: Path, pty_check: Path) -> None:
    out = same_in_vm_and_natively(pty_image, pty_check, "locking")
    assert "open while locked: -1 EIO" in out
    assert "TIOCGPTPEER while locked: -1 EIO" in out
    assert "TIOCGPTPEER: fd 1 cloexec 1" in out


@vm_test
def test_controlling_terminal_requests_answer_as_for_a_session_leader(
    pty_image: Path, pty_check: Path
) -> None:
    out = same_in_vm_and_natively(pty_image, pty_check, "ctty")
    assert "TIOCSCTTY: 0" in out
    assert "tcgetpgrp is ours: 1" in out
    assert "TIOCGPGRP after TIOCNOTTY: -1 ENOTTY" in out


@pytest.mark.skipif(not os.path.exists(PYTHON), reason=f"needs {PYTHON}")
def test_python_openpty_round_trip_matches_native(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    work = tmp_path_factory.mktemp("pypty")
    script = work / "openpty.py"
    script.write_text(PY_OPENPTY)
    manifest = work / "stdlib.manifest"
    with open(manifest, "w") as out:
        for directory, subdirs, files in os.walk(STDLIB):
            subdirs[:] = [d for d in subdirs if d not in ("test", "idlelib")]
            for name in files:
                host = os.path.join(directory, name)
                out.write(f"{host}: {host}\n")
    image = work / "python.img"
    built = osv("build", "--fs", "ramfs", "--format", "raw", "-o", str(image),
                "--from-host", PYTHON, "--from-host", str(script),
                "--manifest", str(manifest), "--cmdline", "/bin/true")  # fmt: skip
    assert built.returncode == 0, built.stderr
    vm = osv("run", str(image), "-e", f"{PYTHON} {script}")
    expected = native([PYTHON, str(script)], timeout=60)
    assert expected.returncode == 0, expected.stderr
    assert program_output(vm.stdout) == expected.stdout, vm.stderr[-3000:]
    assert "slave b'hello\\n'" in expected.stdout
    assert "then EIO" in expected.stdout


# ---- the VFS objects directly (no VM) ----------------------------------------


def _vfs_with_ptys() -> Vfs:
    vfs = Vfs()
    vfs.mount(RamFs(), "none", "/")
    vfs.mkdir("/dev")
    devfs = DevFs()
    devfs.attach_ptys()
    vfs.mount(devfs, "none", "/dev")
    return vfs


def test_each_ptmx_open_makes_a_pair_listed_in_dev_pts_until_closed() -> None:
    vfs = _vfs_with_ptys()
    first = vfs.open("/dev/ptmx", O_RDWR)
    second = vfs.open("/dev/ptmx", O_RDWR)
    assert isinstance(first, PtyMasterFile)
    names = [name for name, _, _ in vfs.resolve("/dev/pts").readdir()]
    assert names == ["ptmx", "0", "1"]

    first.close()
    names = [name for name, _, _ in vfs.resolve("/dev/pts").readdir()]
    assert names == ["ptmx", "1"]
    with pytest.raises(FsError):
        vfs.stat("/dev/pts/0")
    second.close()


def test_peer_of_a_master_is_its_slave_by_path() -> None:
    vfs = _vfs_with_ptys()
    master = vfs.open("/dev/ptmx", O_RDWR)
    master.ioctl(0x40045431, (0).to_bytes(4, "little"))  # TIOCSPTLCK(0)
    slave = master.open_peer(O_RDWR | O_NOCTTY)

    assert vfs.fd_target(slave) == "/dev/pts/0"
    assert vfs.fd_target(master) == "/dev/ptmx"
    assert slave.poll_ready(POLLIN | POLLOUT) == POLLOUT

    master.write(b"ping\r")
    assert slave.read(100) == b"ping\n"
    assert master.read(100) == b"ping\r\n"  # the echo
    slave.close()
    assert master.poll_ready(POLLIN | POLLOUT) & POLLHUP
    master.close()


def test_a_bare_devfs_has_no_ptys() -> None:
    vfs = Vfs()
    vfs.mount(RamFs(), "none", "/")
    vfs.mkdir("/dev")
    vfs.mount(DevFs(), "none", "/dev")
    with pytest.raises(FsError):
        vfs.stat("/dev/ptmx")
