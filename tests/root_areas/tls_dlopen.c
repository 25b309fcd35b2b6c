/* Thread-locals of a library loaded with dlopen (argv[1]): its TLS block is
 * allocated on first use and found through each thread's DTV.  The object it
 * keeps there is reachable; the right answer is no leak. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include "../leak_corpus/truth.h"
int main(int argc, char **argv) {
    void *h = dlopen(argc > 1 ? argv[1] : "libfoo.so.1", RTLD_NOW);
    if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
    void *(*keep)(size_t) = (void *(*)(size_t))dlsym(h, "foo_keep");
    TRUTH_KEPT(keep(88));
    return 0;
}
