// cxx_inline.hpp — inline functions and a template that both translation
// units of the C++ PIE test emit (comdat groups: the linker keeps one copy).
#include <cstdlib>
#include <vector>
#include "truth.h"

struct Cell { Cell *next; long v; };

inline Cell *cell(Cell *next, long v) {
    Cell *c = static_cast<Cell *>(std::malloc(sizeof(Cell)));
    c->next = next;
    c->v = v;
    return c;
}

template <class T> T *chain(int n, const char *last_kind) {
    T *h = nullptr;
    for (int i = 0; i < n; i++) {
        h = cell(h, i);
        TRUTH_LEAK(h, i == n - 1 ? last_kind : "indirect");
    }
    return h;
}

inline long total(const std::vector<Cell *> &v) {
    long s = 0;
    for (Cell *c : v)
        for (; c; c = c->next) s += c->v;
    return s;
}
