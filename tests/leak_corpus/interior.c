/* Objects kept alive only by interior pointers: not leaks. */
#include <stdlib.h>
#include <string.h>
#include "truth.h"
struct rec { int n; char name[60]; };
char *mid;                 /* points 16 bytes into a 64-byte buffer */
struct rec *second;        /* points to element [1] of an array of 4 */
struct holder { long tag; int *inner; } *h;   /* inner points into the middle of an int array */
int main(void) {
    char *buf = malloc(64); strcpy(buf, "interior pointers keep me"); mid = buf + 16;
    struct rec *arr = calloc(4, sizeof *arr); second = &arr[1];
    h = malloc(sizeof *h); int *ints = malloc(40 * sizeof(int)); h->inner = ints + 20;
    TRUTH_KEPT(buf); TRUTH_KEPT(arr); TRUTH_KEPT(h); TRUTH_KEPT(ints);
    buf = NULL; arr = NULL; ints = NULL;
    printf("%s %d\n", mid - 16, second->n);
    return 0;
}
