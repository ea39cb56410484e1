/* Prints its arguments and selected environment variables, exits with argv[1]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        printf("arg %d: [%s]\n", i, argv[i]);
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "T_", 2) == 0)
            printf("env: %s\n", *e);
    fprintf(stderr, "to stderr: %d args\n", argc - 1);
    return argc > 1 ? atoi(argv[1]) : 0;
}
