/* truth.h — how a corpus program tells the test the right answer (STYLE.md #9).
 * Each line on stderr: "truth leak <addr> <size> <direct|indirect>" for an
 * object the program leaks, "truth kept <addr>" for one that stays reachable. */
#ifndef TRUTH_H
#define TRUTH_H
#include <malloc.h>
#include <stdio.h>
#define TRUTH_LEAK(p, kind) fprintf(stderr, "truth leak %p %zu %s\n", (void *)(p), malloc_usable_size(p), kind)
#define TRUTH_KEPT(p) fprintf(stderr, "truth kept %p\n", (void *)(p))
#endif
