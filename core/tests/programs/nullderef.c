/* Dereferences a null pointer. */
#include <stdio.h>

__attribute__((noinline)) int crash_here(volatile int *p) { return *p; }

int main(void) {
    printf("about to crash\n");
    fflush(stdout);
    return crash_here((volatile int *)0);
}
