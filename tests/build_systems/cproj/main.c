#include <stdio.h>
#include <stdlib.h>
#include "list.h"
#include "truth.h"

struct item *kept;

int main(void) {
    kept = list_build(4);
    list_drop_head(&kept);
    for (struct item *i = kept; i; i = i->next) TRUTH_KEPT(i);
    printf("%ld\n", kept->value);
    return 0;
}
