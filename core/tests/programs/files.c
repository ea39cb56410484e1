/* Reads a file given on the command line, then writes, reads back and deletes
 * files under /tmp, printing what it sees at every step. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void cat(const char *path) {
    char buf[4096];
    int fd = open(path, O_RDONLY);
    if (fd < 0) { printf("open %s: %s\n", path, strerror(errno)); return; }
    ssize_t n;
    long total = 0;
    unsigned sum = 0;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++) sum = sum * 31 + (unsigned char)buf[i];
        total += n;
    }
    close(fd);
    printf("%s: %ld bytes, checksum %u\n", path, total, sum);
}

int main(int argc, char **argv) {
    if (argc > 1) cat(argv[1]);
    if (mkdir("/tmp/work", 0755) != 0) printf("mkdir: %s\n", strerror(errno));
    FILE *f = fopen("/tmp/work/data.txt", "w");
    for (int i = 0; i < 1000; i++) fprintf(f, "line %d of the file\n", i);
    fclose(f);
    struct stat st;
    stat("/tmp/work/data.txt", &st);
    printf("size %lld regular %d\n", (long long)st.st_size, S_ISREG(st.st_mode));
    cat("/tmp/work/data.txt");
    int fd = open("/tmp/work/data.txt", O_RDWR);
    lseek(fd, 5, SEEK_SET);
    write(fd, "X", 1);
    char head[16] = {0};
    pread(fd, head, 10, 0);
    printf("head [%s]\n", head);
    close(fd);
    rename("/tmp/work/data.txt", "/tmp/work/moved.txt");
    DIR *d = opendir("/tmp/work");
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') printf("entry %s\n", e->d_name);
    closedir(d);
    printf("unlink %d\n", unlink("/tmp/work/moved.txt"));
    printf("stat after unlink: %s\n", stat("/tmp/work/moved.txt", &st) ? strerror(errno) : "exists");
    printf("rmdir %d\n", rmdir("/tmp/work"));
    printf("open missing: %s\n", open("/nonexistent", O_RDONLY) < 0 ? strerror(errno) : "ok");
    return 0;
}
