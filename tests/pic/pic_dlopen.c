/* pic_dlopen.c — loads each library named on the command line with dlopen
 * (two copies of libpic.so under two names are two instrumented modules at
 * addresses ld.so picks), then calls into each (tests/test_pic.py).  With
 * "wait" as the first argument the last one waits for a byte on stdin. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    int wait = argc > 1 && strcmp(argv[1], "wait") == 0;
    long s = 0;
    long (*hold)(int) = NULL;
    for (int i = 1 + wait; i < argc; i++) {
        void *h = dlopen(argv[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            fprintf(stderr, "dlopen: %s\n", dlerror());
            return 2;
        }
        long (*leak)(int) = (long (*)(int))dlsym(h, "pic_leak_list");
        void (*keep)(int) = (void (*)(int))dlsym(h, "pic_keep");
        hold = (long (*)(int))dlsym(h, "pic_hold_and_wait");
        s += leak(2 + i);
        keep(i);
    }
    if (wait && hold)
        s += hold(0);
    printf("%ld\n", s);
    return 0;
}
