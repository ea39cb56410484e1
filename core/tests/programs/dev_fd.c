/* Reaches its standard output through /dev: the links /dev/stdout and
   /dev/fd/N that lead into /proc/self/fd, and reads /dev/stdin's and
   /dev/stderr's. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    char target[256] = "";
    ssize_t n = readlink("/dev/stdin", target, sizeof target - 1);
    printf("stdin -> %s (%zd)\n", n > 0 ? target : "?", n);
    fflush(stdout);
    FILE *out = fopen("/dev/stdout", "w");
    fprintf(out, "through /dev/stdout\n");
    fclose(out);
    int fd = open("/dev/fd/1", O_WRONLY);
    dprintf(fd, "through /dev/fd/1: %s\n", fd >= 0 ? "yes" : "no");
    n = readlink("/dev/stderr", target, sizeof target - 1);
    target[n > 0 ? n : 0] = 0;
    printf("stderr -> %s\n", target);
    return 0;
}
