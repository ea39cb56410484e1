/* Calls a system call number Linux does not have, then carries on. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(void) {
    long r = syscall(449 + 50);
    printf("result %ld errno %s\n", r, strerror(errno));
    printf("still running\n");
    return 0;
}
