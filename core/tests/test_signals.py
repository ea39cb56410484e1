"""Signals reach the program's handlers as on Linux, and default actions end it.

Every program here is compiled with gcc (static and dynamic) and run both
natively and in the VM; the two runs must print the same. A program killed by
a signal natively has returncode -sig; `osv run` exits with 128 + sig, what a
shell reports for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from guest import native as run_native
from guest import osv, program_output

PYTHON = "/usr/bin/python3.11"
STDLIB = "/usr/lib/python3.11"

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
needs_kvm = pytest.mark.skipif(
    not os.path.exists("/dev/kvm"), reason="these tests boot VMs and need /dev/kvm"
)

VARIANTS = {
    "static": ["gcc", "-static", "-pthread"],
    "dynamic": ["gcc", "-pthread"],
}

HANDLERS_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t count;
static volatile int last_sig;
static siginfo_t last_info;
static sigset_t mask_in_handler;
static volatile double shared_value;

static void plain(int sig) {
    count++;
    last_sig = sig;
    shared_value = shared_value * 2.0 + 0.25;
}

static void with_info(int sig, siginfo_t *info, void *uc) {
    (void)uc;
    count++;
    last_sig = sig;
    last_info = *info;
    sigprocmask(SIG_BLOCK, NULL, &mask_in_handler);
}

static void install(int sig, void (*fn)(int, siginfo_t *, void *), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    sigaction(sig, &sa, NULL);
}

static int rt_order[8];
static int rt_count;

static void rt_handler(int sig, siginfo_t *info, void *uc) {
    (void)uc;
    rt_order[rt_count++] = (sig - SIGRTMIN) * 100 + info->si_value.sival_int;
}

static volatile int depth, max_depth, calls;

static void reentrant(int sig) {
    calls++;
    depth++;
    if (depth > max_depth)
        max_depth = depth;
    if (calls < 3)
        raise(sig);
    depth--;
}

static char alt_stack[65536];
static volatile int on_alt, alt_flags;

static void alt_handler(int sig) {
    char local;
    stack_t now;
    (void)sig;
    on_alt = &local >= alt_stack && &local < alt_stack + sizeof alt_stack;
    sigaltstack(NULL, &now);
    alt_flags = now.ss_flags;
}

int main(void) {
    sigset_t usr1, now, pend, empty;
    struct sigaction sa, old;
    setvbuf(stdout, NULL, _IOLBF, 0);
    sigemptyset(&empty);
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);

    /* A plain handler changes a global; the program goes on with it. */
    shared_value = 1.5;
    signal(SIGUSR1, plain);
    double before = shared_value * 3.0;
    raise(SIGUSR1);
    printf("plain: count=%d sig=%d value=%.2f before=%.2f\n", count, last_sig,
           shared_value, before);

    /* SA_SIGINFO: who sent it and how. */
    install(SIGUSR1, with_info, 0);
    raise(SIGUSR1);
    printf("raise: signo=%d code=%d pid_ok=%d uid_ok=%d\n", last_info.si_signo,
           last_info.si_code, last_info.si_pid == getpid(),
           last_info.si_uid == getuid());
    kill(getpid(), SIGUSR1);
    printf("kill: signo=%d code=%d pid_ok=%d\n", last_info.si_signo,
           last_info.si_code, last_info.si_pid == getpid());
    union sigval value = {.sival_int = 42};
    sigqueue(getpid(), SIGUSR1, value);
    printf("sigqueue: code=%d value=%d\n", last_info.si_code,
           last_info.si_value.sival_int);
    printf("mask in handler: usr1=%d usr2=%d term=%d\n",
           sigismember(&mask_in_handler, SIGUSR1),
           sigismember(&mask_in_handler, SIGUSR2),
           sigismember(&mask_in_handler, SIGTERM));
    sigprocmask(SIG_BLOCK, NULL, &now);
    printf("mask after: usr1=%d usr2=%d\n", sigismember(&now, SIGUSR1),
           sigismember(&now, SIGUSR2));

    /* Blocked: pending, merged, delivered once when unblocked. */
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    count = 0;
    raise(SIGUSR1);
    raise(SIGUSR1);
    sigpending(&pend);
    printf("blocked: count=%d pending=%d\n", count, sigismember(&pend, SIGUSR1));
    sigprocmask(SIG_UNBLOCK, &usr1, NULL);
    sigpending(&pend);
    printf("unblocked: count=%d pending=%d\n", count, sigismember(&pend, SIGUSR1));

    /* Real-time signals queue: every instance arrives, with its value. */
    sigset_t rt;
    sigemptyset(&rt);
    sigaddset(&rt, SIGRTMIN);
    sigaddset(&rt, SIGRTMIN + 2);
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = rt_handler;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGRTMIN, &sa, NULL);
    sigaction(SIGRTMIN + 2, &sa, NULL);
    sigprocmask(SIG_BLOCK, &rt, NULL);
    for (int i = 1; i <= 3; i++) {
        value.sival_int = i;
        sigqueue(getpid(), SIGRTMIN + 2, value);
        value.sival_int = i + 10;
        sigqueue(getpid(), SIGRTMIN, value);
    }
    sigprocmask(SIG_UNBLOCK, &rt, NULL);
    printf("real-time:");
    for (int i = 0; i < rt_count; i++)
        printf(" %d", rt_order[i]);
    printf("\n");

    /* sigsuspend takes a pending signal, then puts the mask back. */
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    count = 0;
    raise(SIGUSR1);
    int r = sigsuspend(&empty);
    int saved_errno = errno;
    sigprocmask(SIG_BLOCK, NULL, &now);
    printf("sigsuspend: r=%d eintr=%d count=%d mask_back=%d\n", r,
           saved_errno == EINTR, count, sigismember(&now, SIGUSR1));
    sigprocmask(SIG_UNBLOCK, &usr1, NULL);

    /* Ignored signals do nothing; ignoring a pending one drops it. */
    signal(SIGUSR2, SIG_IGN);
    raise(SIGUSR2);
    raise(SIGCHLD);
    raise(SIGURG);
    raise(SIGWINCH);
    printf("ignored: still running\n");
    signal(SIGUSR2, plain);
    sigaddset(&usr1, SIGUSR2);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    raise(SIGUSR2);
    signal(SIGUSR2, SIG_IGN);
    sigpending(&pend);
    printf("ignoring drops pending: %d\n", !sigismember(&pend, SIGUSR2));
    sigprocmask(SIG_UNBLOCK, &usr1, NULL);

    /* SA_NODEFER lets the handler interrupt itself; without it the signal
       waits for the handler to return. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = reentrant;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    printf("nodefer: calls=%d max_depth=%d\n", calls, max_depth);
    calls = max_depth = 0;
    sa.sa_flags = 0;
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    printf("deferred: calls=%d max_depth=%d\n", calls, max_depth);

    /* SA_RESETHAND: the handler runs once, then the default is back. */
    sa.sa_handler = plain;
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    sigaction(SIGUSR1, NULL, &old);
    printf("resethand: default_again=%d\n", old.sa_handler == SIG_DFL);

    /* SA_ONSTACK runs the handler on the alternate stack. */
    stack_t ss = {.ss_sp = alt_stack, .ss_size = sizeof alt_stack, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = alt_handler;
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR2, &sa, NULL);
    raise(SIGUSR2);
    stack_t after;
    sigaltstack(NULL, &after);
    printf("altstack: on_alt=%d flags_inside=%d flags_after=%d\n", on_alt, alt_flags,
           after.ss_flags);

    /* SIGKILL and SIGSTOP cannot be caught, but can be asked about. */
    sa.sa_handler = plain;
    int kill_r = sigaction(SIGKILL, &sa, NULL);
    int kill_errno = errno;
    int query_r = sigaction(SIGKILL, NULL, &old);
    printf("sigkill: set=%d einval=%d query=%d\n", kill_r, kill_errno == EINVAL,
           query_r);
    return 0;
}
"""

FAULTS_C = r"""
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

static sigjmp_buf env;
static volatile int sig_seen, code_seen;
static void *volatile addr_seen;
static volatile long trapno, err, rip_seen;
static char alt_stack[65536];
static volatile int on_alt;

static void catcher(int sig, siginfo_t *info, void *ctx) {
    ucontext_t *uc = ctx;
    char local;
    sig_seen = sig;
    code_seen = info->si_code;
    addr_seen = info->si_addr;
    trapno = uc->uc_mcontext.gregs[REG_TRAPNO];
    err = uc->uc_mcontext.gregs[REG_ERR];
    rip_seen = uc->uc_mcontext.gregs[REG_RIP];
    on_alt = &local >= alt_stack && &local < alt_stack + sizeof alt_stack;
    siglongjmp(env, 1);
}

extern char ud2_here[], int3_after[], hlt_here[];

__attribute__((noinline)) static void do_ud2(void) {
    __asm__ volatile(".globl ud2_here\nud2_here: ud2");
}

__attribute__((noinline)) static void do_int3(void) {
    __asm__ volatile("int3\n.globl int3_after\nint3_after: nop");
}

__attribute__((noinline)) static void do_hlt(void) {
    __asm__ volatile(".globl hlt_here\nhlt_here: hlt");
}

static const int read_only = 5;
static volatile int zero;

static void report(const char *what, void *expected, long expected_rip) {
    printf("%s: sig=%d code=%d addr_ok=%d trapno=%ld err=%ld rip_ok=%d\n", what,
           sig_seen, code_seen, addr_seen == expected, trapno, err,
           expected_rip ? rip_seen == expected_rip : 1);
}

#define TRY(what, statement, expected, rip)                                    \
    do {                                                                      \
        if (sigsetjmp(env, 1) == 0) {                                         \
            statement;                                                        \
            printf("%s: no signal\n", what);                                  \
        } else {                                                              \
            report(what, expected, rip);                                      \
        }                                                                     \
    } while (0)

static char *volatile fix_page;
static volatile int fixes;

static void fixer(int sig) {
    (void)sig;
    fixes++;
    mprotect(fix_page, 4096, PROT_READ | PROT_WRITE);
}

__attribute__((noinline)) static int recurse(int n) {
    volatile char buf[1024];
    buf[0] = (char)n;
    return recurse(n + 1) + buf[0];
}

int main(void) {
    struct sigaction sa;
    setvbuf(stdout, NULL, _IOLBF, 0);
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = catcher;
    sa.sa_flags = SA_SIGINFO;
    int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGFPE};
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaction(sigs[i], &sa, NULL);

    TRY("null read", (void)*(volatile int *)16, (void *)16, 0);
    TRY("read-only write", *(volatile int *)&read_only = 1, (void *)&read_only, 0);
    char *none = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TRY("PROT_NONE read", (void)*(volatile char *)none, none, 0);
    TRY("ud2", do_ud2(), ud2_here, (long)ud2_here);
    TRY("int3", do_int3(), NULL, (long)int3_after);
    TRY("hlt", do_hlt(), NULL, (long)hlt_here);
    TRY("divide by zero", { volatile int a = 7; a = a / zero; }, (void *)rip_seen, 0);
    printf("divide address is the rip: %d\n", addr_seen == (void *)rip_seen);

    /* A handler that removes the cause returns, and the access is retried. */
    signal(SIGSEGV, fixer);
    fix_page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    fix_page[10] = 42;
    printf("fixed and retried: fixes=%d value=%d\n", fixes, fix_page[10]);

    /* A stack overflow is caught on the alternate stack. */
    stack_t ss = {.ss_sp = alt_stack, .ss_size = sizeof alt_stack, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, NULL);
    if (sigsetjmp(env, 1) == 0)
        printf("recursion returned %d\n", recurse(0));
    else
        printf("stack overflow: sig=%d code=%d on_alt=%d\n", sig_seen, code_seen,
               on_alt);
    return 0;
}
"""

ASYNC_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

unsigned char patterns[256];
void spin_and_dump(uint64_t *out, volatile int *flag);

/* Loads a pattern into every general register (but rsp) and every XMM
   register, sets DF, spins until *flag changes, then stores them all. */
__asm__(
    ".text\n"
    ".globl spin_and_dump\n"
    "spin_and_dump:\n"
    "  push %rbx\n push %rbp\n push %r12\n push %r13\n push %r14\n push %r15\n"
    "  push %rdi\n"
    "  lea patterns(%rip), %rax\n"
    "  movdqu 0(%rax), %xmm0\n  movdqu 16(%rax), %xmm1\n"
    "  movdqu 32(%rax), %xmm2\n  movdqu 48(%rax), %xmm3\n"
    "  movdqu 64(%rax), %xmm4\n  movdqu 80(%rax), %xmm5\n"
    "  movdqu 96(%rax), %xmm6\n  movdqu 112(%rax), %xmm7\n"
    "  movdqu 128(%rax), %xmm8\n  movdqu 144(%rax), %xmm9\n"
    "  movdqu 160(%rax), %xmm10\n  movdqu 176(%rax), %xmm11\n"
    "  movdqu 192(%rax), %xmm12\n  movdqu 208(%rax), %xmm13\n"
    "  movdqu 224(%rax), %xmm14\n  movdqu 240(%rax), %xmm15\n"
    "  movabs $0x0101010101010101, %rax\n"
    "  movabs $0x0202020202020202, %rbx\n"
    "  movabs $0x0303030303030303, %rcx\n"
    "  movabs $0x0404040404040404, %rdx\n"
    "  movabs $0x0505050505050505, %rbp\n"
    "  movabs $0x0606060606060606, %rdi\n"
    "  movabs $0x0808080808080808, %r8\n"
    "  movabs $0x0909090909090909, %r9\n"
    "  movabs $0x0a0a0a0a0a0a0a0a, %r10\n"
    "  movabs $0x0b0b0b0b0b0b0b0b, %r11\n"
    "  movabs $0x0c0c0c0c0c0c0c0c, %r12\n"
    "  movabs $0x0d0d0d0d0d0d0d0d, %r13\n"
    "  movabs $0x0e0e0e0e0e0e0e0e, %r14\n"
    "  movabs $0x0f0f0f0f0f0f0f0f, %r15\n"
    "  std\n"
    "1: cmpl $0, (%rsi)\n"
    "  je 1b\n"
    "  xchg %rax, (%rsp)\n"
    "  mov %rbx, 8(%rax)\n  mov %rcx, 16(%rax)\n  mov %rdx, 24(%rax)\n"
    "  mov %rbp, 32(%rax)\n  mov %rdi, 40(%rax)\n  mov %rsi, 48(%rax)\n"
    "  mov %r8, 56(%rax)\n  mov %r9, 64(%rax)\n  mov %r10, 72(%rax)\n"
    "  mov %r11, 80(%rax)\n  mov %r12, 88(%rax)\n  mov %r13, 96(%rax)\n"
    "  mov %r14, 104(%rax)\n  mov %r15, 112(%rax)\n"
    "  pushfq\n  pop %rbx\n  cld\n  mov %rbx, 120(%rax)\n"
    "  pop %rbx\n  mov %rbx, 0(%rax)\n"
    "  movdqu %xmm0, 128(%rax)\n  movdqu %xmm1, 144(%rax)\n"
    "  movdqu %xmm2, 160(%rax)\n  movdqu %xmm3, 176(%rax)\n"
    "  movdqu %xmm4, 192(%rax)\n  movdqu %xmm5, 208(%rax)\n"
    "  movdqu %xmm6, 224(%rax)\n  movdqu %xmm7, 240(%rax)\n"
    "  movdqu %xmm8, 256(%rax)\n  movdqu %xmm9, 272(%rax)\n"
    "  movdqu %xmm10, 288(%rax)\n  movdqu %xmm11, 304(%rax)\n"
    "  movdqu %xmm12, 320(%rax)\n  movdqu %xmm13, 336(%rax)\n"
    "  movdqu %xmm14, 352(%rax)\n  movdqu %xmm15, 368(%rax)\n"
    "  pop %r15\n pop %r14\n pop %r13\n pop %r12\n pop %rbp\n pop %rbx\n"
    "  ret\n");

static volatile int flag;
static volatile int handled;

/* Scribbles over every register a handler may change. */
static void clobber(int sig) {
    (void)sig;
    __asm__ volatile(
        "movabs $0xdeadbeefdeadbeef, %%rax\n"
        "mov %%rax, %%rcx\n mov %%rax, %%rdx\n mov %%rax, %%rsi\n"
        "mov %%rax, %%rdi\n mov %%rax, %%r8\n mov %%rax, %%r9\n"
        "mov %%rax, %%r10\n mov %%rax, %%r11\n"
        "movq %%rax, %%xmm0\n pshufd $0, %%xmm0, %%xmm0\n"
        "movdqa %%xmm0, %%xmm1\n movdqa %%xmm0, %%xmm2\n movdqa %%xmm0, %%xmm3\n"
        "movdqa %%xmm0, %%xmm4\n movdqa %%xmm0, %%xmm5\n movdqa %%xmm0, %%xmm6\n"
        "movdqa %%xmm0, %%xmm7\n movdqa %%xmm0, %%xmm8\n movdqa %%xmm0, %%xmm9\n"
        "movdqa %%xmm0, %%xmm10\n movdqa %%xmm0, %%xmm11\n"
        "movdqa %%xmm0, %%xmm12\n movdqa %%xmm0, %%xmm13\n"
        "movdqa %%xmm0, %%xmm14\n movdqa %%xmm0, %%xmm15\n"
        :
        :
        : "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "xmm0",
          "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
          "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory");
    flag = 1;
}

static int intact(const uint64_t *out) {
    static const int numbers[15] = {1, 2, 3, 4, 5, 6, -1, 8, 9, 10, 11, 12, 13, 14, 15};
    for (int i = 0; i < 15; i++) {
        uint64_t expected = numbers[i] < 0 ? (uint64_t)(uintptr_t)&flag
                                           : 0x0101010101010101ull * numbers[i];
        if (out[i] != expected)
            return 0;
    }
    return memcmp(out + 16, patterns, 256) == 0 && (out[15] >> 10 & 1);
}

static pthread_t main_thread;

static void *send_later(void *arg) {
    (void)arg;
    usleep(30000);
    pthread_kill(main_thread, SIGUSR1);
    return NULL;
}

static void note(int sig) {
    (void)sig;
    handled++;
}

static void on(int sig, void (*fn)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigaction(sig, &sa, NULL);
}

static void alarm_in(long usec) {
    struct itimerval it = {{0, 0}, {usec / 1000000, usec % 1000000}};
    setitimer(ITIMER_REAL, &it, NULL);
}

static sem_t sem;

static void *post_later(void *arg) {
    (void)arg;
    usleep(150000);
    sem_post(&sem);
    return NULL;
}

int main(void) {
    uint64_t out[48];
    pthread_t thread;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < 256; i++)
        patterns[i] = (unsigned char)(i * 7 + 3);

    /* Another thread interrupts this one while it computes. */
    main_thread = pthread_self();
    on(SIGUSR1, clobber, 0);
    pthread_create(&thread, NULL, send_later, NULL);
    spin_and_dump(out, &flag);
    pthread_join(thread, NULL);
    printf("signal from a thread: registers intact=%d\n", intact(out));

    /* So does the interval timer. */
    flag = 0;
    memset(out, 0, sizeof out);
    on(SIGALRM, clobber, 0);
    alarm_in(20000);
    spin_and_dump(out, &flag);
    printf("signal from the timer: registers intact=%d\n", intact(out));

    /* A sleep is cut short, with the time left. */
    on(SIGALRM, note, 0);
    alarm_in(50000);
    struct timespec req = {3, 0}, rem = {0, 0};
    int r = nanosleep(&req, &rem);
    printf("nanosleep: r=%d eintr=%d rem_ok=%d handled=%d\n", r, errno == EINTR,
           rem.tv_sec >= 1 && rem.tv_sec < 3, handled);

    /* sigsuspend waits for the timer. */
    sigset_t alrm, empty;
    sigemptyset(&empty);
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    sigprocmask(SIG_BLOCK, &alrm, NULL);
    handled = 0;
    alarm_in(20000);
    r = sigsuspend(&empty);
    printf("sigsuspend: r=%d eintr=%d handled=%d\n", r, errno == EINTR, handled);
    sigprocmask(SIG_UNBLOCK, &alrm, NULL);

    /* pause returns once a handler ran. */
    alarm_in(20000);
    r = pause();
    printf("pause: r=%d eintr=%d handled=%d\n", r, errno == EINTR, handled);

    /* A futex wait: EINTR without SA_RESTART, restarted with it. */
    sem_init(&sem, 0, 0);
    alarm_in(30000);
    r = sem_wait(&sem);
    printf("sem_wait: r=%d eintr=%d\n", r, errno == EINTR);
    on(SIGALRM, note, SA_RESTART);
    handled = 0;
    pthread_create(&thread, NULL, post_later, NULL);
    alarm_in(30000);
    r = sem_wait(&sem);
    pthread_join(thread, NULL);
    printf("sem_wait with SA_RESTART: r=%d handled=%d\n", r, handled);

    /* poll is never restarted. */
    int fds[2];
    pipe(fds);
    struct pollfd p = {fds[0], POLLIN, 0};
    alarm_in(30000);
    r = poll(&p, 1, 3000);
    printf("poll: r=%d eintr=%d\n", r, errno == EINTR);

    /* Writing to a pipe nobody reads: SIGPIPE, then EPIPE. */
    on(SIGPIPE, note, 0);
    handled = 0;
    close(fds[0]);
    r = write(fds[1], "x", 1);
    printf("broken pipe: r=%d epipe=%d sigpipe=%d\n", r, errno == EPIPE, handled);
    return 0;
}
"""

DIE_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static void nothing(int sig) { (void)sig; }

static void *terminate_later(void *arg) {
    (void)arg;
    usleep(20000);
    kill(getpid(), SIGTERM);
    return NULL;
}

int main(int argc, char **argv) {
    const char *how = argc > 1 ? argv[1] : "";
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("start %s\n", how);
    if (!strcmp(how, "term")) {
        kill(getpid(), SIGTERM);
    } else if (!strcmp(how, "abort")) {
        abort();
    } else if (!strcmp(how, "pipe")) {
        int fds[2];
        pipe(fds);
        close(fds[0]);
        write(fds[1], "x", 1);
    } else if (!strcmp(how, "alarm")) {
        struct itimerval it = {{0, 0}, {0, 20000}};
        setitimer(ITIMER_REAL, &it, NULL);
        pause();
    } else if (!strcmp(how, "resethand")) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = nothing;
        sa.sa_flags = SA_RESETHAND;
        sigaction(SIGUSR1, &sa, NULL);
        raise(SIGUSR1);
        printf("handled once\n");
        raise(SIGUSR1);
    } else if (!strcmp(how, "unblock")) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigprocmask(SIG_BLOCK, &set, NULL);
        raise(SIGTERM);
        printf("pending while blocked\n");
        sigprocmask(SIG_UNBLOCK, &set, NULL);
    } else if (!strcmp(how, "thread")) {
        pthread_t thread;
        pthread_create(&thread, NULL, terminate_later, NULL);
        pthread_join(thread, NULL);
        sleep(5);
    } else if (!strcmp(how, "ignored")) {
        signal(SIGTERM, SIG_IGN);
        kill(getpid(), SIGTERM);
        printf("still running\n");
        return 7;
    } else if (!strcmp(how, "segv-ignored")) {
        signal(SIGSEGV, SIG_IGN);
        *(volatile int *)16 = 1;
    }
    printf("not reached\n");
    return 0;
}
"""

SOURCES = {
    "handlers": HANDLERS_C,
    "faults": FAULTS_C,
    "async": ASYNC_C,
    "die": DIE_C,
}


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("signal-programs")


@pytest.fixture(scope="module")
def program(build_dir: Path):  # noqa: ANN201
    """Compile one of the programs above once per variant; returns its path."""
    built: dict[tuple[str, str], Path] = {}

    def compile_(name: str, variant: str) -> Path:
        if (name, variant) not in built:
            source = build_dir / f"{name}.c"
            source.write_text(SOURCES[name])
            output = build_dir / f"{name}-{variant}"
            subprocess.run(
                [*VARIANTS[variant], "-O1", "-o", str(output), str(source)],
                check=True,
            )
            built[name, variant] = output
        return built[name, variant]

    return compile_


def run_in_vm(
    tmp_path: Path, argv: list[str], *from_host: str | Path
) -> subprocess.CompletedProcess[str]:
    image = tmp_path / "signals.img"
    cmdline = " ".join(f'"{word}"' for word in argv)
    host_args = [arg for path in from_host for arg in ("--from-host", str(path))]
    built = osv(
        "build", "--fs", "ramfs", "-o", str(image), *host_args, "--cmdline", cmdline
    )
    assert built.returncode == 0, built.stderr
    return osv("run", str(image))


def shell_status(returncode: int) -> int:
    """The exit status a shell reports: 128 + the signal for a killed program."""
    return 128 - returncode if returncode < 0 else returncode


@needs_kvm
@needs_gcc
@pytest.mark.parametrize("variant", VARIANTS)
def test_handlers_siginfo_masks_and_flags_match_native(
    tmp_path: Path,
    program,
    variant: str,  # noqa: ANN001
) -> None:
    path = program("handlers", variant)
    vm = run_in_vm(tmp_path, [str(path)], path)
    native = run_native([str(path)])
    assert vm.returncode == native.returncode == 0, vm.stderr
    assert program_output(vm.stdout) == native.stdout
    output = native.stdout
    assert "plain: count=1 sig=10 value=3.25 before=4.50" in output
    assert "raise: signo=10 code=-6 pid_ok=1 uid_ok=1" in output  # SI_TKILL
    assert "kill: signo=10 code=0 pid_ok=1" in output  # SI_USER
    assert "sigqueue: code=-1 value=42" in output  # SI_QUEUE
    assert "mask in handler: usr1=1 usr2=1 term=0" in output
    assert "blocked: count=0 pending=1\nunblocked: count=1 pending=0" in output
    assert "real-time: 201 202 203 11 12 13" in output
    assert "sigsuspend: r=-1 eintr=1 count=1 mask_back=1" in output
    assert "nodefer: calls=3 max_depth=3\ndeferred: calls=3 max_depth=1" in output
    assert "altstack: on_alt=1 flags_inside=1 flags_after=0" in output


@needs_kvm
@needs_gcc
@pytest.mark.parametrize("variant", VARIANTS)
def test_fault_handlers_get_siginfo_and_context_like_native(
    tmp_path: Path,
    program,
    variant: str,  # noqa: ANN001
) -> None:
    path = program("faults", variant)
    vm = run_in_vm(tmp_path, [str(path)], path)
    native = run_native([str(path)])
    assert vm.returncode == native.returncode == 0, vm.stderr
    assert program_output(vm.stdout) == native.stdout
    output = native.stdout
    # SEGV_MAPERR at si_addr = CR2, from a user-mode read (error code U).
    assert "null read: sig=11 code=1 addr_ok=1 trapno=14 err=4" in output
    # SEGV_ACCERR: present, write, user.
    assert "read-only write: sig=11 code=2 addr_ok=1 trapno=14 err=7" in output
    assert "ud2: sig=4 code=2 addr_ok=1 trapno=6" in output  # ILL_ILLOPN
    assert "int3: sig=5 code=128 addr_ok=1 trapno=3 err=0 rip_ok=1" in output
    assert "hlt: sig=11 code=128 addr_ok=1 trapno=13 err=0 rip_ok=1" in output
    assert "divide by zero: sig=8 code=1" in output  # FPE_INTDIV
    assert "fixed and retried: fixes=1 value=42" in output
    assert "stack overflow: sig=11 code=1 on_alt=1" in output


@needs_kvm
@needs_gcc
@pytest.mark.parametrize("variant", VARIANTS)
def test_asynchronous_signals_interrupt_computation_and_waits_like_native(
    tmp_path: Path,
    program,
    variant: str,  # noqa: ANN001
) -> None:
    path = program("async", variant)
    vm = run_in_vm(tmp_path, [str(path)], path)
    native = run_native([str(path)])
    assert vm.returncode == native.returncode == 0, vm.stderr
    assert program_output(vm.stdout) == native.stdout
    assert native.stdout == textwrap.dedent(
        """\
        signal from a thread: registers intact=1
        signal from the timer: registers intact=1
        nanosleep: r=-1 eintr=1 rem_ok=1 handled=1
        sigsuspend: r=-1 eintr=1 handled=1
        pause: r=-1 eintr=1 handled=2
        sem_wait: r=-1 eintr=1
        sem_wait with SA_RESTART: r=0 handled=1
        poll: r=-1 eintr=1
        broken pipe: r=-1 epipe=1 sigpipe=1
        """
    )


DEFAULT_ACTIONS = [
    ("term", signal.SIGTERM),
    ("abort", signal.SIGABRT),
    ("pipe", signal.SIGPIPE),
    ("alarm", signal.SIGALRM),
    ("resethand", signal.SIGUSR1),
    ("unblock", signal.SIGTERM),
    ("thread", signal.SIGTERM),
    ("segv-ignored", signal.SIGSEGV),
]


@needs_kvm
@needs_gcc
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    ("how", "sig"), DEFAULT_ACTIONS, ids=[h for h, _ in DEFAULT_ACTIONS]
)
def test_default_action_ends_program_with_shell_status(
    tmp_path: Path,
    program,  # noqa: ANN001
    variant: str,
    how: str,
    sig: signal.Signals,
) -> None:
    path = program("die", variant)
    vm = run_in_vm(tmp_path, [str(path), how], path)
    native = run_native([str(path), how])
    assert native.returncode == -sig
    assert vm.returncode == shell_status(native.returncode) == 128 + sig
    assert program_output(vm.stdout) == native.stdout
    assert "not reached" not in native.stdout
    if sig != signal.SIGSEGV:
        assert f"program terminated by {sig.name} (signal {int(sig)})" in vm.stderr
    else:
        # A fault nobody may handle keeps the fault report.
        assert "page fault at address 0x10" in vm.stderr


@needs_kvm
@needs_gcc
def test_ignored_signal_lets_the_program_go_on(tmp_path: Path, program) -> None:  # noqa: ANN001
    path = program("die", "static")
    vm = run_in_vm(tmp_path, [str(path), "ignored"], path)
    native = run_native([str(path), "ignored"])
    assert vm.returncode == native.returncode == 7
    assert (
        program_output(vm.stdout) == native.stdout == "start ignored\nstill running\n"
    )
    assert vm.stderr == native.stderr == ""


PYTHON_SIGNALS = """\
import os, signal, time
seen = []
def handler(sig, frame):
    seen.append(sig)
signal.signal(signal.SIGUSR1, handler)
os.kill(os.getpid(), signal.SIGUSR1)
print("handler ran:", seen == [signal.SIGUSR1])
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
signal.signal(signal.SIGUSR2, handler)
os.kill(os.getpid(), signal.SIGUSR2)
print("pending:", sorted(signal.sigpending()))
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
print("after unblock:", seen)
class Alarm(Exception):
    pass
def ring(sig, frame):
    raise Alarm
signal.signal(signal.SIGALRM, ring)
signal.setitimer(signal.ITIMER_REAL, 0.05)
start = time.monotonic()
try:
    time.sleep(5)
except Alarm:
    print("sleep interrupted early:", time.monotonic() - start < 2)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
os.kill(os.getpid(), signal.SIGUSR1)
print("sigwait:", signal.sigwait({signal.SIGUSR1}))
"""

PYTHON_SIGTERM = """\
import os, signal
print("bye", flush=True)
os.kill(os.getpid(), signal.SIGTERM)
"""


@pytest.fixture(scope="module")
def python_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An image with python3, its standard library and the scripts above."""
    if not os.path.exists(PYTHON):
        pytest.skip(f"{PYTHON} is not installed")
    scripts = tmp_path_factory.mktemp("scripts")
    (scripts / "signals.py").write_text(PYTHON_SIGNALS)
    (scripts / "sigterm.py").write_text(PYTHON_SIGTERM)
    image = tmp_path_factory.mktemp("python-image") / "python.img"
    # The standard library without its test suite, listed in an OSv manifest.
    manifest = image.parent / "stdlib.manifest"
    with open(manifest, "w") as out:
        for directory, subdirs, files in os.walk(STDLIB):
            subdirs[:] = [d for d in subdirs if d not in ("test", "idlelib")]
            for name in files:
                host = os.path.join(directory, name)
                out.write(f"{host}: {host}\n")
    built = osv(
        "build", "--fs", "ramfs", "--format", "raw", "-o", str(image),
        "--from-host", PYTHON, "--from-host", str(scripts),
        "--manifest", str(manifest), "--cmdline", "/bin/true",
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return image, scripts


@needs_kvm
def test_python_signal_handlers_run_as_natively(python_image) -> None:  # noqa: ANN001
    image, scripts = python_image
    argv = [PYTHON, str(scripts / "signals.py")]
    vm = osv("run", str(image), "-e", " ".join(argv))
    native = run_native(argv)
    assert vm.returncode == native.returncode == 0, vm.stderr
    assert program_output(vm.stdout) == native.stdout
    assert native.stdout == textwrap.dedent(
        """\
        handler ran: True
        pending: [<Signals.SIGUSR2: 12>]
        after unblock: [10, 12]
        sleep interrupted early: True
        sigwait: 10
        """
    )


@needs_kvm
def test_python_killed_by_sigterm_reports_shell_status(python_image) -> None:  # noqa: ANN001
    image, scripts = python_image
    argv = [PYTHON, str(scripts / "sigterm.py")]
    vm = osv("run", str(image), "-e", " ".join(argv))
    native = run_native(argv)
    assert native.returncode == -signal.SIGTERM
    assert vm.returncode == 128 + signal.SIGTERM
    assert program_output(vm.stdout) == native.stdout == "bye\n"
    assert "program terminated by SIGTERM (signal 15)" in vm.stderr


# ---- the frame layout and the pieces under it, without a VM --------------------

LAYOUT_C = r"""
#define _GNU_SOURCE
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <ucontext.h>

int main(void) {
    printf("uc_mcontext %zu\n", offsetof(ucontext_t, uc_mcontext));
    printf("gregs %zu\n", offsetof(ucontext_t, uc_mcontext.gregs));
    printf("fpregs %zu\n", offsetof(ucontext_t, uc_mcontext.fpregs));
    printf("uc_sigmask %zu\n", offsetof(ucontext_t, uc_sigmask));
    printf("REG_R8 %d\nREG_RDI %d\nREG_RAX %d\nREG_RSP %d\nREG_RIP %d\n",
           REG_R8, REG_RDI, REG_RAX, REG_RSP, REG_RIP);
    printf("REG_EFL %d\nREG_CSGSFS %d\nREG_ERR %d\nREG_TRAPNO %d\n",
           REG_EFL, REG_CSGSFS, REG_ERR, REG_TRAPNO);
    printf("REG_OLDMASK %d\nREG_CR2 %d\n", REG_OLDMASK, REG_CR2);
    printf("siginfo %zu\n", sizeof(siginfo_t));
    printf("si_code %zu\n", offsetof(siginfo_t, si_code));
    printf("si_pid %zu\n", offsetof(siginfo_t, si_pid));
    printf("si_uid %zu\n", offsetof(siginfo_t, si_uid));
    printf("si_addr %zu\n", offsetof(siginfo_t, si_addr));
    printf("sa_handler %zu\n", offsetof(struct sigaction, sa_handler));
    printf("SA_RESTORER %#x\nSA_ONSTACK %#x\nSA_RESTART %#x\n",
           0x04000000, SA_ONSTACK, SA_RESTART);
    printf("SA_NODEFER %#x\nSA_RESETHAND %#x\nSA_SIGINFO %#x\n",
           SA_NODEFER, SA_RESETHAND, SA_SIGINFO);
    printf("SI_TKILL %d\nSI_QUEUE %d\nSI_KERNEL %d\n", SI_TKILL, SI_QUEUE,
           SI_KERNEL);
    printf("SS_ONSTACK %d\nSS_DISABLE %d\n", SS_ONSTACK, SS_DISABLE);
    return 0;
}
"""


@needs_gcc
def test_frame_layout_matches_the_c_headers(tmp_path: Path) -> None:
    # glibc's ucontext_t overlays the kernel's struct ucontext up to
    # uc_sigmask, where glibc's sigset_t is longer; the values come from the
    # headers of this machine, as the compiler sees them.
    from osv.sched import _sigframe, _signal, _sigqueue

    source = tmp_path / "layout.c"
    source.write_text(LAYOUT_C)
    subprocess.run(["gcc", "-o", str(tmp_path / "layout"), str(source)], check=True)
    printed = subprocess.run(
        [str(tmp_path / "layout")], capture_output=True, text=True, check=True
    ).stdout
    c = {
        key: int(value, 0)
        for key, value in (line.split() for line in printed.splitlines())
    }
    regs = _sigframe.SIGCONTEXT_REGS
    assert c["uc_mcontext"] == c["gregs"] == _sigframe.UC_MCONTEXT
    assert c["fpregs"] == _sigframe.UC_MCONTEXT + 8 * 23
    assert c["uc_sigmask"] == _sigframe.UC_SIGMASK
    for name, register in [("REG_R8", "r8"), ("REG_RDI", "rdi"), ("REG_RAX", "rax"),
                           ("REG_RSP", "rsp"), ("REG_RIP", "rip"), ("REG_EFL", "rflags")]:  # fmt: skip
        assert c[name] == regs.index(register)
    assert (c["REG_CSGSFS"], c["REG_ERR"], c["REG_TRAPNO"]) == (18, 19, 20)
    assert (c["REG_OLDMASK"], c["REG_CR2"]) == (21, 22)
    assert c["siginfo"] == _sigqueue.SIGINFO_SIZE
    info = _sigqueue.siginfo(11, _sigqueue.SEGV_ACCERR, address=0x1234)
    assert int.from_bytes(info[c["si_code"] : c["si_code"] + 4], "little") == 2
    assert int.from_bytes(info[c["si_addr"] : c["si_addr"] + 8], "little") == 0x1234
    info = _sigqueue.siginfo(10, _sigqueue.SI_USER, pid=7, uid=9)
    assert info[c["si_pid"]] == 7 and info[c["si_uid"]] == 9
    for flag in ("SA_RESTORER", "SA_ONSTACK", "SA_RESTART", "SA_NODEFER",
                 "SA_RESETHAND", "SA_SIGINFO", "SI_TKILL", "SI_QUEUE", "SI_KERNEL"):  # fmt: skip
        assert c[flag] == getattr(_sigqueue, flag), flag
    assert (c["SS_ONSTACK"], c["SS_DISABLE"]) == (
        _signal.SS_ONSTACK,
        _signal.SS_DISABLE,
    )


def test_frame_round_trip_and_alignment() -> None:
    from osv.sched import _sigframe
    from osv.sched._sigqueue import siginfo

    registers = {name: 0x1000 + i for i, name in enumerate(_sigframe.SIGCONTEXT_REGS)}
    data = _sigframe.encode(
        registers,
        restorer=0x401234,
        info=siginfo(10, 0, pid=2),
        mask=0x1234,
        stack=(0x7000, 1 << 31, 8192),
        fault=_sigframe.Fault(trapno=14, err=7, cr2=0xDEAD),
        fpstate=0x7FF000,
        user_cs=0x33,
        user_ss=0x2B,
    )
    assert len(data) == _sigframe.FRAME_SIZE == 440
    assert int.from_bytes(data[:8], "little") == 0x401234
    saved = _sigframe.decode(data[8 : 8 + _sigframe.UCONTEXT_SIZE])
    assert saved.registers == registers
    assert (saved.mask, saved.fpstate, saved.stack) == (
        0x1234,
        0x7FF000,
        (0x7000, 1 << 31, 8192),
    )
    for sp in (0x7FFFFFFFE000, 0x7FFFFFFFDFF7, 0x500001):
        fpstate, frame = _sigframe.place(sp - _sigframe.REDZONE)
        # As after a `call`: rsp + 8 is 16-byte aligned at the handler's entry.
        assert frame % 16 == 8 and fpstate % 64 == 0
        assert frame + _sigframe.FRAME_SIZE <= fpstate
        assert fpstate + _sigframe.FXSAVE_SIZE <= sp - _sigframe.REDZONE


def test_standard_signals_merge_real_time_signals_queue() -> None:
    from osv.sched._sigqueue import SIGRTMIN, PendingSignals, bit, first_signal

    pending = PendingSignals()
    assert pending.add(10, b"first") and not pending.add(10, b"second")
    assert pending.add(SIGRTMIN, b"a") and pending.add(SIGRTMIN, b"b")
    assert pending.take(10) == b"first" and not pending.bits & bit(10)
    assert pending.take(SIGRTMIN) == b"a" and pending.bits & bit(SIGRTMIN)
    pending.discard(SIGRTMIN)
    assert pending.bits == 0
    # Faults go first, then the lowest number.
    assert first_signal(bit(2) | bit(11) | bit(15)) == 11
    assert first_signal(bit(15) | bit(2)) == 2


@needs_kvm
def test_registers_are_found_and_set_at_every_stop_a_signal_can_meet() -> None:
    # The stops of hardware KVM (ring-0 stubs) are set up by hand here, since
    # this test may run on a machine whose KVM keeps `syscall` in ring 3.
    from osv.hv import _kvm
    from osv.hv import _machine as m
    from osv.mm import AddressSpace, PhysicalMemory

    phys = PhysicalMemory(32 << 20, reserved=m.MONITOR_SIZE)
    machine = m.Machine(phys)
    try:
        aspace = AddressSpace(phys)
        machine.install(aspace)
        vcpu = machine.create_vcpu(aspace)
        program = {name: 0x100 * (i + 1) for i, name in enumerate(_kvm.REG_NAMES)}

        def stop_at(rip: int, **changes: int) -> None:
            for name, value in {**program, "rip": rip, **changes}.items():
                vcpu.set_reg(name, value)

        ist_top = vcpu.block_va + m.BLOCK_IST_TOP

        def exception_frame(error_code: bool) -> int:
            words = [0x401000, 0x33, 0x10246, 0x7FFFFFFF0000, 0x2B]
            if error_code:
                words.insert(0, 4)
            rsp = ist_top - 8 * len(words)
            for i, word in enumerate(words):
                offset = vcpu.block_gpa + rsp - vcpu.block_va + 8 * i
                phys.ram[offset : offset + 8] = word.to_bytes(8, "little")
            return rsp

        stop_at(0x401000)
        assert vcpu.user_registers() == {**program, "rip": 0x401000}
        for stub in (m.USER_STUB_VA, m.KERNEL_STUB_VA):
            stop_at(stub)
            found = vcpu.user_registers()
            assert found["rip"] == program["rcx"] - 2
            assert found["rflags"] == program["r11"] and found["rax"] == program["rax"]
        for sysret in m.KERNEL_STUB_SYSRETS:
            stop_at(m.KERNEL_STUB_VA + sysret)
            assert vcpu.user_registers()["rip"] == program["rcx"]
        page_fault = m.EXC_STUBS_VA + 14 * m.EXCEPTION_STUB_SIZE
        stop_at(page_fault + 2, rsp=exception_frame(error_code=True))
        found = vcpu.user_registers()
        assert (found["rip"], found["rflags"], found["rsp"]) == (
            0x401000,
            0x10246,
            0x7FFFFFFF0000,
        )
        stop_at(page_fault + 6, rsp=exception_frame(error_code=True) + 8)
        assert vcpu.user_registers()["rip"] == 0x401000
        # An exit still to come, the middle of the TLB-flush stub: no answer.
        stop_at(page_fault, rsp=exception_frame(error_code=True))
        assert vcpu.user_registers() is None
        stop_at(m.KERNEL_STUB_VA + m.KERNEL_STUB_FLUSH_OFFSET + 5)
        assert vcpu.user_registers() is None

        # From ring 0 the way back is an iretq frame; read back, it is the same.
        wanted = {**program, "rip": 0x402000, "rsp": 0x7FFFFFFE0000, "rflags": 0x202}
        stop_at(m.KERNEL_STUB_VA)
        vcpu.enter_user(wanted)
        assert vcpu.reg("rip") == m.IRET_STUB_VA
        assert vcpu.user_registers() == wanted
        # From ring 3 the registers are simply loaded.
        stop_at(0x401000)
        vcpu.enter_user(wanted)
        assert vcpu.registers() == wanted
    finally:
        machine.close()


# Waits for a signal sent from outside; "handle" installs a handler that
# reports it and exits with 7.
OUTSIDE_C = r"""
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Only async-signal-safe calls in the handler: the signal may arrive while
   the program is still inside its own write of "ready". */
static void report(int sig) {
    char line[] = "got 0\n";
    line[4] = '0' + sig % 10;
    write(1, line, sizeof line - 1);
    _exit(7);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "handle")) {
        signal(SIGINT, report);
        signal(SIGTERM, report);
    }
    write(1, "ready\n", 6);
    for (;;)
        pause();
}
"""


def _signalled(argv: list[str], sig: int) -> tuple[int, str]:
    """Start ``argv``, send ``sig`` once it says it is ready; its status and output."""
    child = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    try:
        lines = []
        while not lines or lines[-1] != "ready\n":
            line = child.stdout.readline()
            assert line, f"{argv} ended before it was ready: {lines}"
            lines.append(line)
        child.send_signal(sig)
        rest = child.stdout.read()
        return shell_status(child.wait(timeout=60)), rest
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()


@needs_kvm
@needs_gcc
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("mode", ["handle", "default"])
def test_a_signal_sent_to_osv_run_reaches_the_program(
    tmp_path: Path, sig: int, mode: str
) -> None:
    source = tmp_path / "outside.c"
    source.write_text(OUTSIDE_C)
    path = tmp_path / "outside"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(path), str(source)], check=True)
    image = tmp_path / "outside.img"
    built = osv(
        "build", "--fs", "ramfs", "-o", str(image), "--from-host", str(path),
        "--cmdline", f"{path} {mode}",
    )  # fmt: skip
    assert built.returncode == 0, built.stderr

    native = _signalled([str(path), mode], sig)
    ours = _signalled([sys.executable, "-m", "osv", "run", str(image)], sig)
    assert ours == native
    assert native == ((7, f"got {sig % 10}\n") if mode == "handle" else (128 + sig, ""))
