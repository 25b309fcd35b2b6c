// cxx_containers.cpp — a live C++ heap of std containers whose buffers, nodes
// and control blocks the tracer must name from their holders (issue #19):
// a std::vector<Node*>, a std::map<std::string, int>, a std::unordered_map
// and a std::shared_ptr cycle, all in one global `state`; a second
// shared_ptr cycle is leaked.
//
// It prints the truth on stdout, then "ready", and waits until stdin closes:
//
//   truth vector ADDR LEN CAP      the buffer of state.nodes
//   truth node ADDR                a Node (one line each)
//   truth map N                    entries of state.counts (each a tree node with a long key)
//   truth umap N                   entries of state.index (hash nodes)
//   truth longstr N                std::strings with a heap buffer (not the short local one)
//   truth list N                   nodes of state.names (a std::list of long strings)
//   truth vectors N                std::vectors with a heap buffer
//   truth buckets N                hash tables with a bucket array of their own (not the single bucket)
//   truth cycle ADDR               a control block of the reachable cycle (two lines)
//   truth solo ADDR                the Node that state.solo owns (its control block is apart)
//   truth leaked ADDR              a control block of the leaked cycle (two lines)
#include <cstdio>
#include <cstdlib>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace app {
struct Node {
    long id;
    std::string name;
    std::vector<Node *> kids;
    std::shared_ptr<Node> peer;
};
struct State {
    std::vector<Node *> nodes;
    std::map<std::string, int> counts;
    std::unordered_map<long, Node *> index;
    std::shared_ptr<Node> ring;
    std::shared_ptr<Node> solo;   // from `new`: a separate control block (_Sp_counted_ptr)
    std::list<std::string> names;
};
}  // namespace app

app::State state;

__attribute__((noinline)) static void build(int n) {
    int longstr = 0;
    for (int i = 0; i < n; i++) {
        auto *x = new app::Node{i, "node " + std::to_string(i) + " with a name too long for SSO", {}, nullptr};
        longstr++;
        state.nodes.push_back(x);
        state.index[i] = x;
        if (i) state.nodes[0]->kids.push_back(x);
    }
    for (int k = 0; k < 7; k++) {
        state.counts["counter number " + std::to_string(k) + " (a long key)"] = k;
        longstr++;
    }
    for (int k = 0; k < 4; k++) {
        state.names.push_back("listed name " + std::to_string(k) + " (too long for SSO)");
        longstr++;
    }
    auto a = std::make_shared<app::Node>();
    auto b = std::make_shared<app::Node>();
    a->id = 100;
    b->id = 101;
    a->peer = b;
    b->peer = a;
    state.ring = a;
    state.solo = std::shared_ptr<app::Node>(new app::Node{200, "solo", {}, nullptr});
    std::printf("truth vector %p %zu %zu\n", (void *)state.nodes.data(), state.nodes.size(),
                state.nodes.capacity());
    for (auto *x : state.nodes) std::printf("truth node %p\n", (void *)x);
    std::printf("truth map %zu\n", state.counts.size());
    std::printf("truth umap %zu\n", state.index.size());
    std::printf("truth longstr %d\n", longstr);
    std::printf("truth list %zu\n", state.names.size());
    std::printf("truth vectors %d\n", 1 + (state.nodes[0]->kids.capacity() ? 1 : 0));
    std::printf("truth buckets %d\n", state.index.bucket_count() > 1 ? 1 : 0);
    // make_shared: the Node sits after the control block's vtable pointer and counts (16 bytes)
    std::printf("truth solo %p\n", (void *)state.solo.get());
    std::printf("truth cycle %p\n", (void *)(reinterpret_cast<char *>(a.get()) - 16));
    std::printf("truth cycle %p\n", (void *)(reinterpret_cast<char *>(b.get()) - 16));
}

__attribute__((noinline)) static void leak_cycle() {
    auto a = std::make_shared<app::Node>();
    auto b = std::make_shared<app::Node>();
    a->peer = b;
    b->peer = a;
    std::printf("truth leaked %p\n", (void *)(reinterpret_cast<char *>(a.get()) - 16));
    std::printf("truth leaked %p\n", (void *)(reinterpret_cast<char *>(b.get()) - 16));
}

int main(int argc, char **argv) {
    build(argc > 1 ? std::atoi(argv[1]) : 5);
    leak_cycle();
    std::printf("ready\n");
    std::fflush(stdout);
    int c;
    while ((c = std::getchar()) != EOF) {
    }
    std::printf("done %zu\n", state.nodes.size());
    return 0;
}
