/*
 * The vvar page: the data the kernel shares with the vDSO.
 *
 * The kernel (osv/vdso/_vvar.py, which mirrors this layout field for field)
 * writes it through its own view of guest memory; programs map it read-only
 * one page below the vDSO's code. Every field is little endian and naturally
 * aligned, so the page means the same to the C code and to Python's struct.
 */
#ifndef OSV_VVAR_H
#define OSV_VVAR_H

#include <stdint.h>

/* Clock ids 0 .. VVAR_CLOCKS - 1 may be served from the page. */
#define VVAR_CLOCKS 16

/* features: the vDSO may answer getcpu from the table of CPU slots. */
#define VVAR_FEATURE_GETCPU 1u

struct vvar_page {
	/*
	 * Sequence count: odd while the kernel rewrites the clock fields. A
	 * reader takes it before and after reading them and tries again when it
	 * was odd or has changed in between.
	 */
	uint32_t seq;
	uint32_t features;
	/* Bit n set: clock id n is CLOCK_MONOTONIC plus offset[n]. */
	uint32_t clock_mask;
	uint32_t reserved;

	/*
	 * CLOCK_MONOTONIC at the time-stamp counter value tsc_base, as whole
	 * nanoseconds and a fraction in units of 2^-32 ns, and the rate: mult
	 * is the length of one counter tick in units of 2^-32 ns. A reading
	 * is mono_ns + (mono_frac + (tsc - tsc_base) * mult) / 2^32.
	 */
	uint64_t tsc_base;
	uint64_t mono_ns;
	uint64_t mono_frac;
	uint64_t mult;

	/* Nanoseconds added to CLOCK_MONOTONIC for each served clock id. */
	int64_t offset[VVAR_CLOCKS];
	/* What clock_getres reports for each served clock id, in ns. */
	uint64_t resolution[VVAR_CLOCKS];

	/*
	 * getcpu: the address and size in bytes of a table of 8-byte slots,
	 * one per vCPU, each holding its own address. Every vCPU's GS base
	 * points at its slot, so "mov gs:0" gives the slot and its place in
	 * the table is the vCPU's number.
	 */
	uint64_t cpu_table;
	uint64_t cpu_table_size;

	/* What gettimeofday reports in a struct timezone. */
	int32_t tz_minuteswest;
	int32_t tz_dsttime;
};

#endif
