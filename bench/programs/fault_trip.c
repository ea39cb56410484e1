/* The round trip of one page fault on file pages, as a minimal program sees it.
 *
 * Writes a file of 768 KiB at argv[1], then maps it privately and read-only
 * 25 times, touching every eighth page of each mapping once. Prints
 * "fault <µs per touch>", the median over the mappings.
 *
 * Under the VM the kernel copies such a file into frames the host has
 * already backed, and each touch is one shadow page fault of KVM, which also
 * fills the translations of the other seven pages of its group (its
 * prefetch). A dynamically linked program's first touches of its libraries
 * are faults of this kind; bench/dynamic.py prices the shadow page faults of
 * a run with this figure, as it prices system calls with the trap loop's.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define FILE_SIZE (768 << 10)
#define PAGE 4096
#define STRIDE 8
#define ROUNDS 25

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: fault_trip FILE\n");
        return 2;
    }
    static char block[FILE_SIZE];
    for (size_t i = 0; i < FILE_SIZE; i++)
        block[i] = (char)(i * 7 + 1);
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, block, FILE_SIZE) != FILE_SIZE) {
        perror(argv[1]);
        return 1;
    }
    double per_touch[ROUNDS];
    long sum = 0;
    for (int r = 0; r < ROUNDS; r++) {
        volatile char *p = mmap(0, FILE_SIZE, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        double t0 = now_us();
        for (size_t i = 0; i < FILE_SIZE; i += STRIDE * PAGE)
            sum += p[i];
        double t1 = now_us();
        per_touch[r] = (t1 - t0) / (FILE_SIZE / (STRIDE * PAGE));
        munmap((void *)p, FILE_SIZE);
    }
    close(fd);
    unlink(argv[1]);
    qsort(per_touch, ROUNDS, sizeof per_touch[0], by_value);
    printf("fault %.2f\n", per_touch[ROUNDS / 2]);
    return sum == 42;  /* keeps the reads; the sum is never 42 */
}
