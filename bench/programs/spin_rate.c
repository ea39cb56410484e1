/* A CPU-bound integer loop that reports its own speed: for the given number of
 * seconds (default 10) it prints, once a second, "rate <iterations per second>".
 * The clock is read once per block of iterations, so that reading it (a trap
 * in the VM) costs almost nothing beside the integer work. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BLOCK 1000000L

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    int seconds = argc > 1 ? atoi(argv[1]) : 10;
    unsigned long x = 88172645463325252UL, acc = 0;
    printf("spinning for %d s\n", seconds);
    fflush(stdout);
    double start = now(), mark = start;
    long done = 0;
    for (int reported = 0; reported < seconds;) {
        for (long i = 0; i < BLOCK; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            acc += x % 1000003;
        }
        done += BLOCK;
        double t = now();
        if (t - mark >= 1.0) {
            printf("rate %.0f\n", done / (t - mark));
            fflush(stdout);
            done = 0;
            mark = t;
            reported++;
        }
    }
    /* The sum is printed so that the compiler keeps the loop. */
    printf("done %lu\n", acc);
    return 0;
}
