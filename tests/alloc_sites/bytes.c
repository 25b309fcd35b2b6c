/* bytes.c — byte buffers typed by their allocation site (FORMAT.md §4 BYTES).
 *
 * An sds-like string (a packed header struct, then the characters; the
 * program keeps a `char *` past the header, as Redis's sds.c does) and a
 * listpack-like buffer (`unsigned char *`), both reachable only through
 * `void *` slots.  Their sites say "pointer-free memory": with no module of
 * the program writing a pointer into untyped memory the tracer skips their
 * words (typed for scanning); otherwise it only names them.
 * Built with -DSTORE_PTR the program also writes a pointer into a `char`
 * buffer (memcpy of a `struct leaf *`): the leaf is held by nothing else, so
 * the tracer must scan the buffers to find it (no false leak).
 * A struct allocated in the chunk of a freed string (glibc gives the same
 * chunk back) must be typed by its own site, not by the string's word that
 * may still lie in the chunk's slack: it holds the only pointer to a leaf.
 * Prints "bag N" (byte buffers kept), "usable N" (their chunks' usable
 * bytes: the same with compact sites as without sites), "truth ..."
 * (leak_corpus/truth.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "truth.h"

struct __attribute__((__packed__)) hdr8 { uint8_t len; uint8_t alloc; unsigned char flags; char buf[]; };
typedef char *str;

struct leaf { struct leaf *next; long v; };
struct pair { struct leaf *a, *b; long c[3]; };      /* 40 bytes */

__attribute__((noinline)) static str str_new(const char *init, size_t len)
{
    void *sh = malloc(sizeof(struct hdr8) + len + 1);
    str s = (char *)sh + sizeof(struct hdr8);
    struct hdr8 *h = (void *)(s - sizeof(struct hdr8));
    h->len = (uint8_t)len;
    h->alloc = (uint8_t)len;
    h->flags = 1;
    memcpy(s, init, len);
    s[len] = '\0';
    return s;
}

__attribute__((noinline)) static unsigned char *lp_new(size_t cap)
{
    unsigned char *lp = malloc(cap);
    memset(lp, 0, cap);
    lp[0] = (unsigned char)cap;
    lp[cap - 1] = 0xFF;
    return lp;
}

#ifdef STORE_PTR
/* a pointer written into a byte buffer: an untyped pointer write */
__attribute__((noinline)) static char *boxed(struct leaf *l)
{
    char *b = malloc(40);
    memset(b, 'x', 40);
    memcpy(b + 8, &l, sizeof l);
    return b;
}
#endif

#define NBAG 48
void *bag[NBAG];
void *box;
void *reuse;

int main(void)
{
    char text[64];
    for (int i = 0; i < NBAG; i += 2) {
        int n = 20 + i;                         /* lengths 20 .. 66 */
        memset(text, 'a' + i % 26, sizeof text);
        bag[i] = str_new(text, (size_t)n);
        bag[i + 1] = lp_new((size_t)(24 + 8 * i));
    }
    fprintf(stderr, "bag %d\n", NBAG);
    size_t usable = 0;
    for (int i = 0; i < NBAG; i += 2)
        usable += malloc_usable_size((char *)bag[i] - sizeof(struct hdr8)) + malloc_usable_size(bag[i + 1]);
    fprintf(stderr, "usable %zu\n", usable);
    /* a 40-byte string freed, a 40-byte struct in its chunk */
    memset(text, 'z', sizeof text);
    str gone = str_new(text, 40);
    free(gone - sizeof(struct hdr8));
    struct pair *pr = malloc(sizeof *pr);
    pr->a = malloc(sizeof(struct leaf));
    pr->a->next = NULL;
    pr->b = NULL;
    reuse = pr;
    TRUTH_KEPT(pr->a);
    /* a leaked string: named by its site */
    str lost = str_new("lost", 4);
    TRUTH_LEAK(lost - sizeof(struct hdr8), "direct");
    lost = NULL;
#ifdef STORE_PTR
    struct leaf *l = malloc(sizeof *l);
    l->next = NULL;
    l->v = 7;
    box = boxed(l);
    TRUTH_KEPT(l);
    l = NULL;
#endif
    return 0;
}
