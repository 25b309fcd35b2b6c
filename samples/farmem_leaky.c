/* farmem_leaky: a paging workload with a known leaked region, for graph guidance.
 *
 *   farmem_leaky MIB [SECONDS]      (default 8 MiB per part, 60 s)
 *
 * Phase 1 builds, in the main heap and in this order: a live list A (MIB of
 * 256-byte records, held by a global), a list L of MIB that is then leaked (its
 * head pointer is dropped: nothing points into it), and prints
 *   ready heap=BYTES pid=PID leak_first_page=P leak_last_page=Q leak_records=N
 * where pages P..Q (page numbers: address >> 12) hold every byte of every leaked
 * record.  They are kept as page numbers, not addresses: an address kept in a
 * variable of main's frame would be a root that keeps the leaked list reachable.  It walks A
 * until SIGUSR2 comes (the test sends it once the pager has its heap graph) or
 * 60 s have passed, then phase 2 grows the heap with a live list B of MIB and
 * walks A and B in turns, checking every record, until SECONDS more have passed
 * or SIGUSR1 comes, then prints
 *   passes=N mismatches=M
 * A pager with a budget of about A + L leaves room for B only by evicting:
 * leaked pages first if it knows the graph, else whatever its clock finds cold
 * (A, lower in the heap than L, comes first in address order).
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WORDS 30
struct rec {
	struct rec *next;
	uint64_t id;
	uint64_t w[WORDS];
};

struct rec *list_a, *list_b;            /* the live lists (globals: exact roots) */
static volatile sig_atomic_t stop, grow;

static uint64_t val(uint64_t id, int i) { return id * 0x9e3779b97f4a7c15ull + (uint64_t)i; }

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

static struct rec *build(uint64_t n, uint64_t first, uintptr_t *lo, uintptr_t *hi)
{
	struct rec *head = NULL, **tail = &head;
	for (uint64_t i = 0; i < n; i++) {
		struct rec *r = malloc(sizeof *r);
		if (!r)
			abort();
		r->next = NULL;
		r->id = first + i;
		for (int k = 0; k < WORDS; k++)
			r->w[k] = val(r->id, k);
		*tail = r;
		tail = &r->next;
		if (lo && (uintptr_t)r >> 12 < *lo)
			*lo = (uintptr_t)r >> 12;
		if (hi && ((uintptr_t)r + sizeof *r - 1) >> 12 > *hi)
			*hi = ((uintptr_t)r + sizeof *r - 1) >> 12;
	}
	return head;
}

static uint64_t walk(const struct rec *r)
{
	uint64_t bad = 0;
	for (; r; r = r->next)
		for (int k = 0; k < WORDS; k++)
			bad += r->w[k] != val(r->id, k);
	return bad;
}

static void on_usr1(int sig) { (void)sig; stop = 1; }
static void on_usr2(int sig) { (void)sig; grow = 1; }

int main(int argc, char **argv)
{
	uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 8;
	double seconds = argc > 2 ? atof(argv[2]) : 60;
	signal(SIGUSR1, on_usr1);
	signal(SIGUSR2, on_usr2);
	uint64_t n = (mib << 20) / sizeof(struct rec);
	list_a = build(n, 0, NULL, NULL);
	uintptr_t lo = UINTPTR_MAX, hi = 0;
	struct rec *leak = build(n, n, &lo, &hi);
	leak = NULL;            /* the only pointer to L is gone: L is leaked */
	(void)leak;
	printf("ready heap=%llu pid=%d leak_first_page=%#lx leak_last_page=%#lx leak_records=%llu\n",
	       (unsigned long long)(3 * n * 272), getpid(), (unsigned long)lo, (unsigned long)hi,
	       (unsigned long long)n);
	fflush(stdout);
	double t0 = now();
	uint64_t passes = 0, bad = 0;
	while (!stop && !grow && now() - t0 < 60.0) {
		bad += walk(list_a);
		passes++;
	}
	list_b = build(n, 2 * n, NULL, NULL);
	printf("grown\n");
	fflush(stdout);
	t0 = now();
	while (!stop && now() - t0 < seconds) {
		bad += walk(list_a) + walk(list_b);
		passes++;
	}
	printf("passes=%llu mismatches=%llu\n", (unsigned long long)passes, (unsigned long long)bad);
	return bad != 0;
}
