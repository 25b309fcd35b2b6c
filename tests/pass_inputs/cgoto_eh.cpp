// Computed goto (indirectbr) and invokes in one function: the emitter gives an
// invoke with a result a new normal destination, and must split no indirectbr
// edge for it; the landing pads are reached from the dispatch loop's blocks.
// Prints acc=1003 (two pushes, a throw caught, one more push).
#include <cstdio>
#include <stdexcept>
#include <vector>

struct Obj { Obj *next; long v; };

__attribute__((noinline)) Obj *mk(long v, Obj *n) {
    if (v == 99)
        throw std::runtime_error("bad");
    return new Obj{n, v};
}

__attribute__((noinline)) long run(const unsigned char *code) {
    static void *const labels[] = {&&push, &&thr, &&end};
    Obj *sp = nullptr;
    long acc = 0;
    std::vector<Obj *> keep;
#define NEXT goto *labels[*code++]
    NEXT;
push:
    try {
        sp = mk(acc + 1, sp);
        keep.push_back(sp);
        acc++;
    } catch (std::exception &) {
        acc += 100;
    }
    NEXT;
thr:
    try {
        sp = mk(99, sp);
    } catch (std::exception &) {
        acc += 1000;
    }
    NEXT;
end:
    for (Obj *o : keep)
        delete o;
    return acc;
}

int main() {
    const unsigned char code[] = {0, 0, 1, 0, 2};
    std::printf("acc=%ld\n", run(code));
    return 0;
}
