/* list_walk.c — a hot loop without calls (it gets a loop map point) over a
 * linked list; measures what zero-byte loop stackmaps cost.
 * Usage: list_walk [passes]   (default 200) */
#include <stdio.h>
#include <stdlib.h>

struct node { struct node *next; long v; };

int main(int argc, char **argv) {
    int passes = argc > 1 ? atoi(argv[1]) : 200;
    struct node *head = NULL;
    for (long i = 0; i < 1000000; i++) {
        struct node *n = malloc(sizeof *n);
        n->v = i;
        n->next = head;
        head = n;
    }
    long s = 0;
    for (int p = 0; p < passes; p++)
        for (struct node *n = head; n; n = n->next)
            s += n->v ^ p;
    printf("%ld\n", s);
    return 0;
}
