/* Exercises time, sleeping, randomness and uname; prints only what is stable. */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/utsname.h>
#include <time.h>
#include <sys/time.h>

int main(void) {
    struct timespec a, b, r;
    clock_gettime(CLOCK_MONOTONIC, &a);
    struct timespec req = {0, 20 * 1000 * 1000};
    printf("nanosleep %d\n", nanosleep(&req, NULL));
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    printf("slept at least 20 ms: %d\n", ms >= 20 && ms < 1000);
    clock_gettime(CLOCK_REALTIME, &r);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    printf("realtime agrees with gettimeofday: %d\n", tv.tv_sec - r.tv_sec <= 1 && r.tv_sec > 1700000000);
    printf("time() agrees: %d\n", time(NULL) - r.tv_sec <= 1);
    unsigned char buf[64] = {0};
    printf("getrandom %zd\n", getrandom(buf, sizeof buf, 0));
    int nonzero = 0;
    for (int i = 0; i < 64; i++) nonzero += buf[i] != 0;
    printf("random bytes vary: %d\n", nonzero > 40);
    struct utsname u;
    uname(&u);
    printf("sysname %s machine %s\n", u.sysname, u.machine);
    return 0;
}
