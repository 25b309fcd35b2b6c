// sites_cxx.cc — `mappedtrace c++ --alloc-sites`: a malloc in C++ code is a
// site; `operator new` is not (FORMAT.md §4).  Prints
// "site ADDR LINE" for the malloc'd object and "new ADDR" for the other.
#include <cstdio>
#include <cstdlib>

namespace shapes {
struct Poly { Poly *next; long corners; };
}

int main()
{
    auto *p = static_cast<shapes::Poly *>(std::malloc(sizeof(shapes::Poly))); std::fprintf(stderr, "site %p %d\n", (void *)p, __LINE__);
    p->next = nullptr;
    auto *q = new shapes::Poly{nullptr, 3};
    std::fprintf(stderr, "new %p\n", (void *)q);
    p = nullptr;
    q = nullptr;
    return 0;
}
