/* farmem_fork: a program that forks while its heap is paged (issue 15: the program's own
 * fork must be followed).  It builds MIB MiB of 256-byte records, each a function of its
 * index and a generation, prints "ready pid=… heap=…", and walks the records until
 * SIGUSR1 (or SECONDS).  Then it forks FORKS times: each child checks every record
 * against the generation at its fork and exits 0 only if all are right (what Redis's
 * BGSAVE child does: read the whole heap as it was at the fork); between two forks the
 * parent rewrites every record with the next generation, so a child that were given a
 * page's later content would see it.  Last line:
 *   "forks=N child_failures=K child_bad_records=B mismatches=M"  (all zero: every byte right)
 * With LINGER, it then waits (at most LINGER seconds) for another SIGUSR1 before it exits
 * (a test reads the pager's status meanwhile).
 *
 * Build: cc -O2 -o farmem_fork farmem_fork.c
 * Run:   farmem_fork MIB FORKS SECONDS [LINGER]
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "farmem_work.h"

#define NV 29
struct rec { struct rec *next; uint64_t idx, gen, v[NV]; };

static uint64_t want(uint64_t idx, uint64_t gen, int j) { return mix(idx * 64 + (uint64_t)j + gen * 0x1000003ull); }

static void fill(struct rec *r, uint64_t gen)
{
	r->gen = gen;
	for (int j = 0; j < NV; j++)
		r->v[j] = want(r->idx, gen, j);
}

/* records wrong for generation `gen` (idx must run 0..n-1 along the list) */
static uint64_t check(struct rec *head, uint64_t n, uint64_t gen)
{
	uint64_t bad = 0, i = 0;
	for (struct rec *r = head; r && i < n; r = r->next, i++) {
		int ok = r->idx == i && r->gen == gen;
		for (int j = 0; ok && j < NV; j++)
			ok = r->v[j] == want(i, gen, j);
		bad += !ok;
	}
	return bad + (n - i);
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s MIB FORKS SECONDS\n", argv[0]);
		return 2;
	}
	uint64_t n = strtoull(argv[1], 0, 10) * (1 << 20) / sizeof(struct rec);
	int forks = atoi(argv[2]);
	double until = now() + atof(argv[3]);
	signal(SIGUSR1, on_usr1);
	struct rec *head = NULL, **tail = &head;
	for (uint64_t i = 0; i < n; i++) {
		struct rec *r = malloc(sizeof *r);
		if (!r)
			return 3;
		r->idx = i;
		r->next = NULL;
		fill(r, 0);
		*tail = r;
		tail = &r->next;
	}
	printf("ready pid=%d heap=%llu\n", getpid(), (unsigned long long)(n * sizeof(struct rec)));
	fflush(stdout);
	uint64_t gen = 0, mism = 0, sum = 0;
	while (!stop && now() < until) {        /* a hot tenth, read */
		uint64_t i = 0;
		for (struct rec *r = head; r && i < n / 10; r = r->next, i++)
			sum += r->v[i % NV];
	}
	int failures = 0;
	uint64_t child_bad = 0;
	for (int f = 0; f < forks; f++) {
		int pfd[2];
		if (pipe(pfd))
			return 4;
		pid_t c = fork();
		if (c < 0) {
			perror("fork");
			return 4;
		}
		if (c == 0) {
			close(pfd[0]);
			uint64_t bad = check(head, n, gen);
			if (write(pfd[1], &bad, sizeof bad) != sizeof bad)
				_exit(3);
			_exit(bad ? 1 : 0);
		}
		close(pfd[1]);
		/* the next generation while the child reads the last one */
		gen++;
		for (struct rec *r = head; r; r = r->next)
			fill(r, gen);
		uint64_t bad = 0;
		if (read(pfd[0], &bad, sizeof bad) != sizeof bad)
			bad = n;
		close(pfd[0]);
		int st = 0;
		if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			failures++;
		child_bad += bad;
		printf("fork %d: child %d checked generation %llu: %llu bad records, exit %d\n", f, (int)c,
		       (unsigned long long)gen - 1, (unsigned long long)bad, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		fflush(stdout);
	}
	mism = check(head, n, gen);
	printf("forks=%d child_failures=%d child_bad_records=%llu mismatches=%llu sum=%llu\n", forks, failures,
	       (unsigned long long)child_bad, (unsigned long long)mism, (unsigned long long)(sum & 1));
	fflush(stdout);
	if (argc > 4) {
		double end = now() + atof(argv[4]);
		stop = 0;
		while (!stop && now() < end)
			usleep(10000);
	}
	return failures || mism ? 1 : 0;
}
