#include <stdio.h>
#include <stdlib.h>
#include "list.h"
#include "truth.h"

struct item *list_build(int n) {
    struct item *head = NULL;
    for (int i = 0; i < n; i++) {
        struct item *it = malloc(sizeof *it);
        it->name = malloc(32);
        snprintf(it->name, 32, "item %d", i);
        it->value = i;
        it->next = head;
        head = it;
    }
    return head;
}

void list_drop_head(struct item **head) {
    struct item *h = *head;
    TRUTH_LEAK(h, "direct");
    TRUTH_LEAK(h->name, "indirect");
    *head = h->next;                       /* h and its name are lost */
}
