// cxx_a.cpp — first translation unit of the C++ PIE test (tests/test_pic.py).
#include "cxx_inline.hpp"

long from_a() {
    std::vector<Cell *> v;
    v.push_back(chain<Cell>(3, "direct"));   // dropped when v dies: 1 direct + 2 indirect
    return total(v);
}
