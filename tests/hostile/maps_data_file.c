/* maps_data_file.c — a process that maps data files beside its binaries (as
 * glibc maps gconv-modules.cache or a locale archive), leaks one block, prints
 * "truth leak …" and "ready", then waits for stdin to close. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include "../leak_corpus/truth.h"

int main(int argc, char **argv) {
    int fd = open(argc > 1 ? argv[1] : "/etc/passwd", O_RDONLY);
    void *m = fd >= 0 ? mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    char *p = malloc(64);
    TRUTH_LEAK(p, "direct");
    p = NULL;
    printf("ready %d\n", m != MAP_FAILED);
    fflush(stdout);
    char buf[8];
    while (read(0, buf, sizeof buf) > 0) {}
    return 0;
}
