/*
 * The vDSO given to every program: clock_gettime, gettimeofday, time,
 * clock_getres and getcpu answered inside the program, without a system call.
 *
 * Each function reads the vvar page (vvar.h), which the kernel keeps up to
 * date, and the CPU's time-stamp counter. Whatever the page does not cover
 * (CPU-time clocks, unknown clock ids, a clock the kernel could not
 * calibrate) is passed on to the kernel with a real `syscall`, so every call
 * gives the answer the system call would.
 *
 * The image is linked by vdso.lds into one read-only, executable segment that
 * starts at address 0 and needs no relocation: it may be mapped anywhere.
 * It uses no library, no writable data and a few words of stack.
 */
#include <stdint.h>

#include "vvar.h"

/* System call numbers (x86-64). */
#define NR_GETTIMEOFDAY 96
#define NR_TIME 201
#define NR_CLOCK_GETTIME 228
#define NR_CLOCK_GETRES 229
#define NR_GETCPU 309

#define CLOCK_REALTIME 0
#define NS_PER_SEC 1000000000ull
#define NS_PER_USEC 1000ull

/*
 * How long a reader waits for the kernel to finish rewriting the page before
 * it asks the kernel instead. The kernel's writer is ordinary host code that
 * can be descheduled in the middle of an update; the system call then gives
 * the right answer without the wait.
 */
#define MAX_SPINS 100000

/* The structures of the Linux x86-64 ABI, under names of our own. */
struct abi_timespec {
	int64_t tv_sec;
	int64_t tv_nsec;
};

struct abi_timeval {
	int64_t tv_sec;
	int64_t tv_usec;
};

struct abi_timezone {
	int32_t tz_minuteswest;
	int32_t tz_dsttime;
};

/*
 * The vvar page, one page below this image wherever it is mapped. The
 * linker script defines the symbol relative to the image, so the compiler
 * reaches it with a RIP-relative address and nothing is relocated.
 */
extern const volatile struct vvar_page vvar
	__attribute__((visibility("hidden")));

#define compiler_barrier() __asm__ __volatile__("" ::: "memory")

static inline long syscall2(long number, long a, long b)
{
	long result;

	__asm__ __volatile__("syscall"
			     : "=a"(result)
			     : "0"(number), "D"(a), "S"(b)
			     : "rcx", "r11", "memory");
	return result;
}

static inline long syscall3(long number, long a, long b, long c)
{
	long result;

	__asm__ __volatile__("syscall"
			     : "=a"(result)
			     : "0"(number), "D"(a), "S"(b), "d"(c)
			     : "rcx", "r11", "memory");
	return result;
}

/*
 * The time-stamp counter, read no earlier than the loads before it: without
 * the fence the CPU may read the counter before the sequence count, and pair
 * an old count with new parameters.
 */
static inline uint64_t read_tsc(void)
{
	uint32_t low, high;

	__asm__ __volatile__("lfence\n\trdtsc" : "=a"(low), "=d"(high) :: "memory");
	return ((uint64_t)high << 32) | low;
}

/*
 * Clock ids are C ints (clockid_t): only the low half of the register is
 * the caller's, so the functions take int32_t and widen it themselves.
 * Negative ids (another process's CPU clock) are never served.
 */
static inline int clock_served(int32_t clock)
{
	return (uint32_t)clock < VVAR_CLOCKS && (vvar.clock_mask >> clock & 1);
}

/*
 * Nanoseconds on ``clock``, or -1 when the page cannot give them (the clock
 * is not served, or the kernel kept the page busy for too long).
 */
static int64_t clock_ns(int32_t clock)
{
	for (int spins = 0; spins < MAX_SPINS; spins++) {
		uint32_t seq = vvar.seq;

		compiler_barrier();
		if (seq & 1) {
			__asm__ __volatile__("pause");
			continue;
		}
		if (!clock_served(clock))
			return -1;

		uint64_t tsc = read_tsc();
		uint64_t base = vvar.tsc_base;
		/*
		 * A counter read on a CPU slightly behind the one the base was
		 * taken from can lie just below the base; counting it as the
		 * base keeps the clock from stepping back.
		 */
		uint64_t delta = (int64_t)(tsc - base) > 0 ? tsc - base : 0;
		unsigned __int128 scaled =
			(unsigned __int128)delta * vvar.mult + vvar.mono_frac;
		uint64_t ns = vvar.mono_ns + (uint64_t)(scaled >> 32) +
			      (uint64_t)vvar.offset[clock];

		compiler_barrier();
		if (vvar.seq == seq)
			return (int64_t)ns;
	}
	return -1;
}

int __vdso_clock_gettime(int32_t clock, struct abi_timespec *ts)
{
	int64_t ns = clock_ns(clock);

	if (ns < 0)
		return syscall2(NR_CLOCK_GETTIME, clock, (long)ts);
	ts->tv_sec = (uint64_t)ns / NS_PER_SEC;
	ts->tv_nsec = (uint64_t)ns % NS_PER_SEC;
	return 0;
}

int __vdso_gettimeofday(struct abi_timeval *tv, struct abi_timezone *tz)
{
	if (tv) {
		int64_t ns = clock_ns(CLOCK_REALTIME);

		if (ns < 0)
			return syscall2(NR_GETTIMEOFDAY, (long)tv, (long)tz);
		tv->tv_sec = (uint64_t)ns / NS_PER_SEC;
		tv->tv_usec = (uint64_t)ns % NS_PER_SEC / NS_PER_USEC;
	}
	if (tz) {
		tz->tz_minuteswest = vvar.tz_minuteswest;
		tz->tz_dsttime = vvar.tz_dsttime;
	}
	return 0;
}

int64_t __vdso_time(int64_t *result)
{
	int64_t ns = clock_ns(CLOCK_REALTIME);

	if (ns < 0)
		return syscall2(NR_TIME, (long)result, 0);
	int64_t seconds = (uint64_t)ns / NS_PER_SEC;

	if (result)
		*result = seconds;
	return seconds;
}

int __vdso_clock_getres(int32_t clock, struct abi_timespec *res)
{
	if (!clock_served(clock))
		return syscall2(NR_CLOCK_GETRES, clock, (long)res);
	if (res) {
		uint64_t ns = vvar.resolution[clock];

		res->tv_sec = ns / NS_PER_SEC;
		res->tv_nsec = ns % NS_PER_SEC;
	}
	return 0;
}

/*
 * The vCPU's number comes from its slot in the kernel's CPU table, found
 * through the GS base the kernel gives each vCPU (vvar.h). A program that
 * set a GS base of its own makes the kernel clear VVAR_FEATURE_GETCPU; the
 * range check is a second guard against a stray GS base.
 */
long __vdso_getcpu(uint32_t *cpu, uint32_t *node, void *unused)
{
	if (vvar.features & VVAR_FEATURE_GETCPU) {
		uint64_t slot;

		__asm__ __volatile__("movq %%gs:0, %0" : "=r"(slot));
		uint64_t offset = slot - vvar.cpu_table;

		if (offset < vvar.cpu_table_size && !(offset & 7)) {
			if (cpu)
				*cpu = offset >> 3;
			if (node)
				*node = 0;
			return 0;
		}
	}
	return syscall3(NR_GETCPU, (long)cpu, (long)node, (long)unused);
}

/* The plain names Linux's vDSO also exports, for programs that look them up. */
int clock_gettime(int32_t, struct abi_timespec *)
	__attribute__((weak, alias("__vdso_clock_gettime")));
int gettimeofday(struct abi_timeval *, struct abi_timezone *)
	__attribute__((weak, alias("__vdso_gettimeofday")));
int64_t time(int64_t *) __attribute__((weak, alias("__vdso_time")));
int clock_getres(int32_t, struct abi_timespec *)
	__attribute__((weak, alias("__vdso_clock_getres")));
long getcpu(uint32_t *, uint32_t *, void *)
	__attribute__((weak, alias("__vdso_getcpu")));
