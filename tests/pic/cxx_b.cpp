// cxx_b.cpp — second translation unit and main of the C++ PIE test.
#include <cstdio>
#include "cxx_inline.hpp"

long from_a();
static Cell *kept;            // a plain global: a vector's destructor would run at exit

int main() {
    long s = from_a();
    kept = cell(nullptr, 5);
    TRUTH_KEPT(kept);
    std::vector<Cell *> v;
    v.push_back(chain<Cell>(2, "direct"));
    s += total(v) + kept->v;
    std::printf("%ld\n", s);
    return 0;
}
