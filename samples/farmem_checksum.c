/* farmem_checksum: a paging workload that checks every byte it reads.
 *
 *   farmem_checksum [MIB [THREADS [SECONDS]]]     (defaults 64 2 10)
 *
 * Main and THREADS workers each build a linked list of 256-byte records in
 * their own arena (main heap, thread arenas) and main fills a 4 MiB buffer
 * (an mmapped chunk).  Every worker walks its list in passes: a full pass
 * every fourth, the first quarter (the hot part) otherwise; a full pass
 * checks every record against the value its id and generation give and
 * rewrites a quarter of them with a new generation.  Prints
 *   ready heap=BYTES pid=PID
 * once built, then at the end
 *   passes=N mismatches=M checksum=X expected=Y
 * (SIGUSR1 ends the run early) where X is summed from memory and Y from the formula alone; a list cut
 * short (a page read back as zeros) counts as a mismatch.
 */
#include <malloc.h>
#include <pthread.h>
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

struct worker {
	pthread_t t;
	uint64_t first_id, n;
	struct rec *head;
	uint64_t full_passes, passes, mismatches;
	pthread_barrier_t *built;
};

static uint64_t churn(uint64_t pass);
static double deadline;
static volatile sig_atomic_t stop;   /* SIGUSR1: finish the current pass and report */
static int verbose;     /* $FARMEM_CHECKSUM_VERBOSE: describe the first mismatches on stderr */
static uint64_t *big;
static size_t big_words = (4u << 20) / 8;

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t val(uint64_t id, uint64_t gen, int i) { return mix(id * 131 + (gen << 40) + (uint64_t)i); }

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* the generation of record id after F full passes: pass j rewrites ids with id%4 == j%4 to gen j+1 */
static uint64_t gen_of(uint64_t id, uint64_t F)
{
	if (F == 0)
		return 0;
	uint64_t last = F - 1;
	uint64_t r = id % 4, j = last - ((last % 4 + 4 - r) % 4);
	if (j > last) /* wrapped below zero */
		return 0;
	return j + 1;
}

static void build(struct worker *w)
{
	struct rec **tail = &w->head;
	for (uint64_t k = 0; k < w->n; k++) {
		struct rec *r = malloc(sizeof *r);
		if (!r) {
			perror("malloc");
			exit(2);
		}
		r->id = w->first_id + k;
		for (int i = 0; i < WORDS; i++)
			r->w[i] = val(r->id, 0, i);
		r->next = NULL;
		*tail = r;
		tail = &r->next;
	}
}

static void work(struct worker *w)
{
	uint64_t hot = w->n / 4;
	while (!stop && now() < deadline) {
		int full = w->passes % 4 == 0;
		uint64_t k = 0;
		for (struct rec *r = w->head; r && (full || k < hot); r = r->next, k++) {
			uint64_t g = gen_of(r->id, w->full_passes);
			int bad = 0;
			for (int i = 0; i < WORDS; i++)
				bad |= r->w[i] != val(r->id, g, i);
			w->mismatches += bad;
			if (bad && verbose && w->mismatches <= 5)
				fprintf(stderr, "mismatch: record %p id %llu gen %llu word0 %016llx want %016llx (gen-1: %016llx)\n",
					(void *)r, (unsigned long long)r->id, (unsigned long long)g,
					(unsigned long long)r->w[0], (unsigned long long)val(r->id, g, 0),
					(unsigned long long)(g ? val(r->id, g - 1, 0) : 0));
			if (full && r->id % 4 == w->full_passes % 4)
				for (int i = 0; i < WORDS; i++)
					r->w[i] = val(r->id, w->full_passes + 1, i);
		}
		if (full) {
			if (k != w->n && verbose)
				fprintf(stderr, "list of %llu records cut after %llu\n", (unsigned long long)w->n,
					(unsigned long long)k);
			w->mismatches += k != w->n;       /* a list cut short is a wrong byte too */
			w->full_passes++;
		}
		w->passes++;
		if (w->first_id == 0) { /* main also checks the mmapped buffer */
			for (size_t i = 0; i < big_words; i += 512)
				w->mismatches += big[i] != mix(i);
			if (full)
				w->mismatches += churn(w->full_passes);
		}
	}
}

static void on_usr1(int sig)
{
	(void)sig;
	stop = 1;
}

/* The program's own munmap, mremap and madvise(DONTNEED), which the pager must follow:
 * a buffer above the mmap threshold that is checked, grown or shrunk with realloc
 * (mremap), freed and allocated again (munmap, mmap); malloc_trim gives free heap
 * pages back with MADV_DONTNEED.  Returns the mismatches found. */
static uint64_t *churn_buf;
static size_t churn_words;
static uint64_t churn_gen;

static uint64_t churn(uint64_t pass)
{
	uint64_t bad = 0;
	for (size_t i = 0; i < churn_words; i++)
		bad += churn_buf && churn_buf[i] != mix(i ^ (churn_gen << 48));
	size_t keep = churn_words;
	size_t words = ((pass % 3) + 1) * (256u << 10) / 8;   /* 256, 512, 768 KiB */
	if (pass % 8 == 7) {
		free(churn_buf);
		churn_buf = malloc(words * 8);
		keep = 0;
	} else {
		churn_buf = realloc(churn_buf, words * 8);
	}
	if (!churn_buf) {
		perror("churn");
		exit(2);
	}
	for (size_t i = 0; i < (keep < words ? keep : words); i++)
		bad += churn_buf[i] != mix(i ^ (churn_gen << 48));
	churn_gen++;
	for (size_t i = 0; i < words; i++)
		churn_buf[i] = mix(i ^ (churn_gen << 48));
	churn_words = words;
	if (pass % 4 == 1)
		malloc_trim(0);
	return bad;
}

static void *thread_main(void *arg)
{
	struct worker *w = arg;
	build(w);
	pthread_barrier_wait(w->built);
	pthread_barrier_wait(w->built);
	work(w);
	return NULL;
}

int main(int argc, char **argv)
{
	uint64_t mib = argc > 1 ? strtoull(argv[1], 0, 10) : 64;
	int threads = argc > 2 ? atoi(argv[2]) : 2;
	double seconds = argc > 3 ? atof(argv[3]) : 10;
	if (threads < 0 || threads > 64 || mib == 0) {
		fprintf(stderr, "usage: farmem_checksum [MIB [THREADS(0-64) [SECONDS]]]\n");
		return 2;
	}
	signal(SIGUSR1, on_usr1);
	verbose = getenv("FARMEM_CHECKSUM_VERBOSE") != NULL;
	uint64_t total = (mib << 20) / sizeof(struct rec);
	uint64_t per = total / (threads + 1);
	struct worker *ws = calloc(threads + 1, sizeof *ws);
	pthread_barrier_t built;
	pthread_barrier_init(&built, NULL, threads + 1);
	big = malloc(big_words * 8);
	for (size_t i = 0; i < big_words; i++)
		big[i] = mix(i);
	for (int t = 0; t <= threads; t++) {
		ws[t].first_id = t * per;
		ws[t].n = per;
		ws[t].built = &built;
	}
	for (int t = 1; t <= threads; t++)
		pthread_create(&ws[t].t, NULL, thread_main, &ws[t]);
	build(&ws[0]);
	pthread_barrier_wait(&built);
	printf("ready heap=%llu pid=%d\n", (unsigned long long)(per * (threads + 1) * 272 + big_words * 8), getpid());
	fflush(stdout);
	deadline = now() + seconds;
	pthread_barrier_wait(&built);
	work(&ws[0]);
	uint64_t passes = 0, bad = 0, sum = 0, want = 0, seen = 0;
	for (int t = 0; t <= threads; t++) {
		if (t)
			pthread_join(ws[t].t, NULL);
		passes += ws[t].passes;
		bad += ws[t].mismatches;
		for (struct rec *r = ws[t].head; r && seen < total; r = r->next) {
			seen++;
			uint64_t g = gen_of(r->id, ws[t].full_passes);
			for (int i = 0; i < WORDS; i++) {
				sum += r->w[i];
				want += val(r->id, g, i);
			}
		}
	}
	for (size_t i = 0; i < big_words; i++) {
		sum += big[i];
		want += mix(i);
	}
	bad += seen != per * (threads + 1);
	printf("passes=%llu mismatches=%llu checksum=%016llx expected=%016llx\n", (unsigned long long)passes,
	       (unsigned long long)bad, (unsigned long long)sum, (unsigned long long)want);
	return bad || sum != want;
}
