/* plain_lib.c: one source, two builds, for tests/hostile/test_no_maps.py.
 *   -DLIB: a shared library built WITHOUT the pass (plain clang-22): it keeps
 *          heap objects in its own writable data;
 *   else:  a program built WITH the pass (mappedtrace cc) that uses it, prints
 *          "ready" and waits for stdin to close. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifdef LIB
struct item { struct item *next; long v; };
struct item *lib_items;                  /* writable data of the library */

void lib_fill(int n) {
    for (int i = 0; i < n; i++) {
        struct item *x = malloc(sizeof *x);
        x->next = lib_items;
        x->v = i;
        lib_items = x;
    }
}
#else
void lib_fill(int n);

int main(void) {
    lib_fill(4);
    printf("ready\n");
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0)
        ;
    return 0;
}
#endif
