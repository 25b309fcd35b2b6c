/* (d) A struct allocated with extra trailing bytes, malloc(sizeof(struct) + n),
 * holding pointers there (an inline array the struct's type does not declare).
 * The struct has pointers of its own; the trailing ones must be found too.  A
 * leak beside it is still found. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "truth.h"

struct hdr { struct hdr *next; uint32_t n, flags; uint64_t stamp; };

struct hdr *volatile head;

static struct hdr *new_hdr(uint32_t n) {
    struct hdr *h = calloc(1, sizeof *h + n * sizeof(void *));
    h->n = n;
    return h;
}

static void **extra(struct hdr *h) { return (void **)(h + 1); }

int main(void) {
    head = new_hdr(5);
    TRUTH_KEPT(head);
    for (uint32_t i = 0; i < 5; i++) {
        char *s = malloc(32);
        strcpy(s, "trailing");
        extra(head)[i] = s;
        TRUTH_KEPT(s);
    }
    head->next = new_hdr(0);
    TRUTH_KEPT(head->next);
    struct hdr *lost = new_hdr(2);
    extra(lost)[1] = malloc(48);
    TRUTH_LEAK(lost, "direct");
    TRUTH_LEAK(extra(lost)[1], "indirect");
    lost = NULL;
    return 0;
}
