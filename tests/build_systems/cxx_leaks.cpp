// cxx_leaks.cpp — a C++ program with a leaked std::vector of nodes and a
// std::shared_ptr cycle; prints the truth like tests/leak_corpus (truth.h).
#include <memory>
#include <vector>
#include <cstdio>
#include <stdexcept>
#include "truth.h"

namespace app {
struct Node {
    int id;
    std::vector<Node *> kids;
    std::shared_ptr<Node> peer;
};
}  // namespace app

std::vector<app::Node *> *volatile holder;   // escapes: no heap elision

__attribute__((noinline)) static void leak_vector(int n) {
    holder = new std::vector<app::Node *>();
    for (int i = 0; i < n; i++) holder->push_back(new app::Node{i, {}, nullptr});
    std::vector<app::Node *> *v = holder;
    TRUTH_LEAK(v, "direct");
    TRUTH_LEAK(v->data(), "indirect");
    for (app::Node *x : *v) TRUTH_LEAK(x, "indirect");
    holder = nullptr;
}

__attribute__((noinline)) static void leak_cycle() {
    auto a = std::make_shared<app::Node>();
    auto b = std::make_shared<app::Node>();
    a->peer = b;
    b->peer = a;
    // make_shared puts the object after libstdc++'s control block header
    // (vtable pointer + two counters: 16 bytes): the chunk starts there.
    TRUTH_LEAK(reinterpret_cast<char *>(a.get()) - 16, "direct");
    TRUTH_LEAK(reinterpret_cast<char *>(b.get()) - 16, "indirect");
}

int main() {
    leak_vector(5);
    leak_cycle();
    try {
        throw std::runtime_error("exceptions work");
    } catch (const std::exception &e) {
        std::printf("%s\n", e.what());
    }
    return 0;
}
