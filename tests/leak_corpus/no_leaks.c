/* Frees everything: zero reports expected (also with stdio buffers, qsort, strdup, threads). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "truth.h"
struct node { struct node *next; char *name; };
static void *worker(void *a) { void *p = malloc(1000); memset(p, 1, 1000); free(p); return a; }
static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
int main(void) {
    struct node *h = NULL;
    for (int i = 0; i < 100; i++) { struct node *n = malloc(sizeof *n); n->name = strdup("abc"); n->next = h; h = n; }
    char *words[3] = { strdup("pear"), strdup("apple"), strdup("fig") };
    qsort(words, 3, sizeof *words, cmp);
    pthread_t t; pthread_create(&t, NULL, worker, NULL); pthread_join(t, NULL);
    printf("%s %s %s\n", words[0], words[1], words[2]);
    for (int i = 0; i < 3; i++) free(words[i]);
    while (h) { struct node *n = h->next; free(h->name); free(h); h = n; }
    void *big = malloc(1 << 20); free(big);
    return 0;
}
