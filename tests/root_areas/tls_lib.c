/* A shared library with thread-locals, built several times (-DLIB=name,
 * -DBIG=bytes of TLS) so that TLS module ids and static TLS offsets shift.
 * LIB_keep() stores a heap object in a thread-local of this library only. */
#include <stdlib.h>
#include <string.h>
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#ifndef BIG
#define BIG 64
#endif
__thread char CAT(LIB, _pad)[BIG] = { 1 };
__thread void *CAT(LIB, _obj);
void *CAT(LIB, _keep)(size_t n) {
    CAT(LIB, _pad)[n % BIG] = 2;
    CAT(LIB, _obj) = malloc(n);
    memset(CAT(LIB, _obj), 0, n);
    return CAT(LIB, _obj);
}
