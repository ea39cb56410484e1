/* Allocates 100 MiB in small and large pieces, exercises mmap/mprotect/munmap,
 * and touches a 4 GiB PROT_NONE reservation sparsely. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int main(void) {
    /* 50 MiB in 100-byte pieces and 50 MiB in 1 MiB pieces. */
    enum { SMALL = 50 * 1024 * 1024 / 100, LARGE = 50 };
    static char *small[SMALL];
    char *large[LARGE];
    unsigned long sum = 0;
    for (int i = 0; i < SMALL; i++) { small[i] = malloc(100); memset(small[i], i & 0xFF, 100); }
    for (int i = 0; i < LARGE; i++) { large[i] = malloc(1 << 20); memset(large[i], i, 1 << 20); }
    for (int i = 0; i < SMALL; i++) sum += (unsigned char)small[i][99];
    for (int i = 0; i < LARGE; i++) sum += (unsigned char)large[i][(1 << 20) - 1];
    for (int i = 0; i < SMALL; i++) free(small[i]);
    for (int i = 0; i < LARGE; i++) free(large[i]);
    printf("heap checksum %lu\n", sum);

    char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    printf("fresh page reads %d\n", p[4096]);
    strcpy(p, "hello");
    printf("mprotect RO: %d, still reads [%s]\n", mprotect(p, 1 << 20, PROT_READ), p);
    printf("mprotect RW: %d\n", mprotect(p, 4096, PROT_READ | PROT_WRITE));
    p[0] = 'J';
    printf("after write [%s]\n", p);
    printf("munmap middle: %d\n", munmap(p + 4096, 4096));
    printf("munmap rest: %d %d\n", munmap(p, 4096), munmap(p + 8192, (1 << 20) - 8192));

    size_t reserve = 4UL << 30;
    char *r = mmap(NULL, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED) { perror("reserve"); return 1; }
    unsigned long touched = 0;
    for (size_t off = 0; off < reserve; off += 256UL << 20) {
        if (mprotect(r + off, 4096, PROT_READ | PROT_WRITE) != 0) { perror("mprotect"); return 1; }
        r[off] = 7;
        r[off + 100] = 9;
        touched += r[off] + r[off + 100];
    }
    printf("reservation touched: %lu\n", touched);
    printf("munmap reservation: %d\n", munmap(r, reserve));
    return 0;
}
