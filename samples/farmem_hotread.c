/* farmem_hotread: a hot set that is only read, beside a cold set read as a slow stream.
 *
 *   farmem_hotread [HOT_MIB [COLD_MIB [SECONDS [STREAM]]]]     (defaults 4 28 30 1)
 *
 * Fills a hot and a cold buffer in the main heap (written once, at start; the
 * hot one first, at the lower addresses, where a clock's hand starts), then
 * reads every hot page over and over (never writes it again) until SECONDS
 * pass or SIGUSR1, checking each word it reads; each pass also reads STREAM
 * pages of the cold buffer, in order, round and round (the memory pressure:
 * a paged cold page faults back and takes room).  A pager that sees only
 * faults and writes finds nothing of the hot set's use after the start and
 * evicts it like the cold pages; one that sees reads keeps it resident.  Prints
 *   ready pid=PID hot=LO-HI cold=LO-HI
 * once filled (page-aligned ranges, hex), then at the end
 *   passes=N mismatches=M
 */
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static volatile sig_atomic_t stop;

static void on_usr1(int sig)
{
	(void)sig;
	stop = 1;
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static uint64_t value(uint64_t i)
{
	return i * 0x9e3779b97f4a7c15ull + 1;
}

static uint64_t *fill(size_t bytes, uint64_t base)
{
	uint64_t *p;
	if (posix_memalign((void **)&p, PAGE, bytes))
		return NULL;
	for (size_t i = 0; i < bytes / 8; i++)
		p[i] = value(base + i);
	return p;
}

int main(int argc, char **argv)
{
	size_t hot_mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 4;
	size_t cold_mib = argc > 2 ? strtoul(argv[2], NULL, 0) : 28;
	double seconds = argc > 3 ? atof(argv[3]) : 30;
	size_t stream = argc > 4 ? strtoul(argv[4], NULL, 0) : 1;
	size_t hot_b = hot_mib << 20, cold_b = cold_mib << 20;

	/* both buffers in the main heap (brk), not mmapped chunks */
	mallopt(M_MMAP_THRESHOLD, 1 << 30);
	signal(SIGUSR1, on_usr1);
	uint64_t *hot = fill(hot_b, 0);
	uint64_t *cold = fill(cold_b, 1ull << 40);
	if (!hot || !cold) {
		fprintf(stderr, "farmem_hotread: out of memory\n");
		return 1;
	}
	printf("ready pid=%d hot=%#lx-%#lx cold=%#lx-%#lx\n", (int)getpid(), (unsigned long)hot,
	       (unsigned long)hot + hot_b, (unsigned long)cold, (unsigned long)cold + cold_b);
	fflush(stdout);

	double end = now() + seconds;
	uint64_t passes = 0, mismatches = 0, cold_reads = 0;
	size_t cur = 0, cold_pages = cold_b / PAGE;
	while (!stop && now() < end) {
		/* one word per 64 bytes of every hot page: reads only */
		for (size_t i = 0; i < hot_b / 8; i += 8)
			if (hot[i] != value(i))
				mismatches++;
		for (size_t k = 0; k < stream && cold_pages; k++, cur = (cur + 1) % cold_pages, cold_reads++)
			if (cold[cur * (PAGE / 8)] != value((1ull << 40) + cur * (PAGE / 8)))
				mismatches++;
		passes++;
	}
	printf("passes=%lu cold_reads=%lu mismatches=%lu\n", (unsigned long)passes, (unsigned long)cold_reads,
	       (unsigned long)mismatches);
	return mismatches != 0;
}
