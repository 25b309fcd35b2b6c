// C++ exceptions through instrumented frames: every call in a try block is an
// invoke, which the pass rewrites into a statepoint invoke.
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

struct Node { Node *next; int v; };

__attribute__((noinline)) Node *make(int n) {
    Node *h = nullptr;
    for (int i = 0; i < n; i++) h = new Node{h, i};
    return h;
}

__attribute__((noinline)) int thrower(Node *l, int k) {
    if (k > 2) throw std::runtime_error("k=" + std::to_string(k));
    return l ? l->v + k : k;
}

int main(int argc, char **) {
    Node *l = make(5);
    int total = 0;
    for (int k = 0; k < 5; k++) {
        try {
            std::string s = "iteration " + std::to_string(k);
            total += thrower(l, k + argc - 1);
            std::printf("%s ok %d\n", s.c_str(), total);
        } catch (const std::exception &e) {
            std::printf("caught %s, list head %d\n", e.what(), l->v);
        }
    }
    std::printf("total %d\n", total);
    return 0;
}
