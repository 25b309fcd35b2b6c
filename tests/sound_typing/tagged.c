/* Tagged pointers kept only in `uintptr_t` storage (low bit set): a struct
 * field and a scalar global; and pointers copied with memcpy into a byte array
 * field (at a variable index).  The pass sees the ptrtoint values and the
 * copies reach those words and marks them STORED; the tracer scans them
 * conservatively and takes a tagged (interior) value as a reference.  A leak
 * beside them is found. */
#include <string.h>
#include <stdint.h>
#include <stdlib.h>
#include "truth.h"

struct tnode { struct tnode *next; uintptr_t tagged; uint64_t k; };

__attribute__((noinline)) static uintptr_t tag(void *p) { return (uintptr_t)p | 1; }

struct blob { uint64_t id; unsigned char raw[24]; };

__attribute__((noinline)) static void put(struct blob *b, int i, void *p) {
    memcpy(b->raw + 8 * i, &p, sizeof p);
}

struct tnode *volatile head;
struct tnode *volatile spare;      /* a struct copy: pointers to pointers only */
struct blob *volatile blob;
volatile uintptr_t groot;          /* a scalar global holding a tagged pointer */

static struct tnode *new_tnode(struct tnode *next, uint64_t k) {
    struct tnode *n = malloc(sizeof *n);
    n->next = next;
    n->k = k ^ ((uintptr_t)n >> 4);     /* a hash of a pointer: no pointer */
    n->tagged = tag(malloc(32));
    return n;
}

int main(void) {
    struct tnode *h = NULL;
    for (int i = 0; i < 4; i++) {
        h = new_tnode(h, (uint64_t)i);
        TRUTH_KEPT(h);
        TRUTH_KEPT((void *)(h->tagged & ~(uintptr_t)1));
    }
    head = h;
    spare = malloc(sizeof *spare);
    *spare = *h;
    TRUTH_KEPT(spare);
    void *g = malloc(40);
    groot = (uintptr_t)g | 1;
    TRUTH_KEPT(g);
    blob = calloc(1, sizeof(struct blob));
    TRUTH_KEPT(blob);
    for (int i = 0; i < 3; i++) {
        void *p = malloc(16);
        put(blob, i, p);
        TRUTH_KEPT(p);
    }
    struct tnode *lost = new_tnode(NULL, 9);
    TRUTH_LEAK(lost, "direct");
    TRUTH_LEAK((void *)(lost->tagged & ~(uintptr_t)1), "indirect");
    lost = NULL;
    return 0;
}
