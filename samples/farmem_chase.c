/* farmem_chase: pointer chasing over records linked in an order unrelated to allocation order.
 *
 *   farmem_chase [MIB [SECONDS [SEED]]]        (defaults 64 10 1)
 *
 * Allocates MIB of 256-byte records one after the other (so address order is
 * allocation order), then links them into one cycle in the order of a random
 * permutation (Fisher-Yates, xorshift64* seeded with SEED): the record after
 * a record is on a page that nothing about its address predicts.  The only
 * pointer into the cycle is the global `head`.  The allocation-order array
 * and the permutation are freed before the walk (they are above the mmap
 * threshold: gone from the heap).
 *
 * Then it walks the cycle, record after record, checking every word of each
 * record against the value its id gives, and counting steps; a full lap must
 * come back to `head` after exactly N records and sum to the expected
 * checksum (a page read back as zeros, or a stale one, breaks one or the
 * other).  Read-only: the pages it evicts stay clean.  Prints
 *   ready heap=BYTES pid=PID records=N
 * once built, `mark ops=N t=SECONDS` on SIGUSR2, and at the end (SECONDS, or SIGUSR1)
 *   ops=STEPS seconds=S ops_per_s=X laps=L mismatches=M
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "farmem_work.h"

#define WORDS 30
struct node {
	struct node *next;
	uint64_t id;
	uint64_t w[WORDS];
};

struct node *head;                      /* the one root of the cycle */

static uint64_t val(uint64_t id, int i) { return mix(id * 131 + (uint64_t)i); }

int main(int argc, char **argv)
{
	uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 64;
	double seconds = argc > 2 ? atof(argv[2]) : 10;
	rng_state = mix(argc > 3 ? strtoull(argv[3], NULL, 10) : 1) | 1;
	if (mib == 0 || mib > (1u << 20)) {
		fprintf(stderr, "usage: farmem_chase [MIB(1-1048576) [SECONDS [SEED]]]\n");
		return 2;
	}
	signal(SIGUSR1, on_usr1);
	signal(SIGUSR2, on_usr2);
	uint64_t n = (mib << 20) / 272;         /* a 256-byte record's chunk is 272 bytes */
	struct node **all = malloc(n * sizeof *all);
	uint32_t *perm = malloc(n * sizeof *perm);
	if (!all || !perm) {
		perror("malloc");
		return 2;
	}
	uint64_t want = 0;
	for (uint64_t i = 0; i < n; i++) {
		struct node *r = malloc(sizeof *r);
		if (!r) {
			perror("malloc");
			return 2;
		}
		r->id = i;
		for (int k = 0; k < WORDS; k++) {
			r->w[k] = val(i, k);
			want += r->w[k];
		}
		all[i] = r;
		perm[i] = (uint32_t)i;
	}
	for (uint64_t i = n - 1; i > 0; i--) {
		uint64_t j = rnd() % (i + 1);
		uint32_t t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (uint64_t i = 0; i < n; i++)
		all[perm[i]]->next = all[perm[(i + 1) % n]];
	head = all[perm[0]];
	free(all);
	free(perm);
	printf("ready heap=%llu pid=%d records=%llu\n", (unsigned long long)(n * 272), getpid(),
	       (unsigned long long)n);
	fflush(stdout);

	double t0 = now(), deadline = t0 + seconds;
	uint64_t ops = 0, laps = 0, bad = 0;
	while (!stop && now() < deadline) {
		struct node *r = head;
		uint64_t sum = 0, k = 0;
		for (; k < n && r && !stop; k++) {
			for (int i = 0; i < WORDS; i++) {
				bad += r->w[i] != val(r->id, i);
				sum += r->w[i];
			}
			r = r->next;
			if ((k & 4095) == 4095 && now() >= deadline)
				break;
			if (mark)
				progress(ops + k);
		}
		ops += k;
		if (k == n) {           /* a whole lap: back at the head, the right sum */
			laps++;
			bad += r != head;
			bad += sum != want;
		} else if (!r) {
			bad++;          /* the cycle was cut (a page read back as zeros) */
			break;
		}
	}
	double dt = now() - t0;
	printf("ops=%llu seconds=%.3f ops_per_s=%.1f laps=%llu mismatches=%llu\n", (unsigned long long)ops, dt,
	       ops / dt, (unsigned long long)laps, (unsigned long long)bad);
	return bad != 0;
}
