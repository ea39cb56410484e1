/* First and second touch of fresh anonymous memory, per 4 KiB page.
 *
 * Prints one line per mapping size: "<KiB> <first µs/page> <second µs/page>".
 * A first touch costs a page fault natively; in the VM, the host's page
 * fault (backing the frame) plus KVM's shadow fault.
 */
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(void) {
    const size_t sizes[] = {64 << 10, 1 << 20, 8 << 20, 64 << 20};
    for (int s = 0; s < 4; s++) {
        size_t n = sizes[s], pages = n / 4096;
        volatile char *p = mmap(0, n, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return 1;
        double t0 = now_us();
        for (size_t i = 0; i < n; i += 4096)
            p[i] = 1;
        double t1 = now_us();
        for (size_t i = 0; i < n; i += 4096)
            p[i] = 2;
        double t2 = now_us();
        printf("%zu %.3f %.3f\n", n >> 10, (t1 - t0) / pages, (t2 - t1) / pages);
    }
    return 0;
}
