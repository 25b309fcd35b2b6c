/* farmem_leakserver: a long-running "server" that leaks steadily.
 *
 *   farmem_leakserver [MIB [SECONDS [LEAK_EVERY [SEED]]]]    (defaults 16 30 256 1)
 *
 * State: MIB of 256-byte sessions held by a global array of pointers.  Each
 * request reads 4 sessions (90 % of picks from the hottest quarter, 10 % from
 * any) and checks every word, updates one of them every fourth request,
 * then builds a response of 256..1216 bytes in a malloc'd buffer, checks it
 * and frees it, except every LEAK_EVERY-th request, whose response is leaked
 * (its last pointer is dropped): the leaked bytes grow for as long as the
 * server runs, among freed buffers that malloc reuses.  Prints
 *   ready heap=BYTES pid=PID sessions=N
 * once built, `mark ops=N t=SECONDS` on SIGUSR2, and at the end (SECONDS, or SIGUSR1)
 *   ops=REQUESTS seconds=S ops_per_s=X leaks=K leaked_bytes=B mismatches=M
 * (leaked_bytes: the sum of the leaked buffers' malloc sizes).
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "farmem_work.h"

#define WORDS 29
struct session {
	struct session *next;           /* unused here: a session type with a pointer, like a real one */
	uint64_t id, gen;
	uint64_t w[WORDS];
};

struct response {
	uint64_t request, words;
	uint64_t body[];
};

struct session **sessions;              /* the root of the live state */
static uint64_t nsess;

static uint64_t val(uint64_t id, uint64_t gen, int i) { return mix(id * 131 + (gen << 40) + (uint64_t)i); }

/* one request; returns the mismatches it saw; leaks its response when `leak` */
static __attribute__((noinline)) uint64_t request(uint64_t req, int leak, uint64_t *leaked_bytes)
{
	uint64_t bad = 0;
	for (int k = 0; k < 4; k++) {
		uint64_t r = rnd();
		struct session *s = sessions[r % 10 < 9 ? (r >> 8) % (nsess / 4 + 1) : (r >> 8) % nsess];
		for (int i = 0; i < WORDS; i++)
			bad |= s->w[i] != val(s->id, s->gen, i);
		if (k == 0 && req % 4 == 0) {
			s->gen++;
			for (int i = 0; i < WORDS; i++)
				s->w[i] = val(s->id, s->gen, i);
		}
	}
	uint64_t words = 30 + (rnd() % 16) * 8;     /* 256..1216 bytes with the header */
	struct response *resp = malloc(sizeof *resp + words * 8);
	if (!resp) {
		perror("malloc");
		exit(2);
	}
	resp->request = req;
	resp->words = words;
	for (uint64_t i = 0; i < words; i++)
		resp->body[i] = mix(req ^ (i << 48));
	for (uint64_t i = 0; i < words; i++)
		bad |= resp->body[i] != mix(req ^ (i << 48));
	if (leak)
		*leaked_bytes += sizeof *resp + words * 8;     /* and the pointer dies here */
	else
		free(resp);
	return bad;
}

int main(int argc, char **argv)
{
	uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 16;
	double seconds = argc > 2 ? atof(argv[2]) : 30;
	uint64_t every = argc > 3 ? strtoull(argv[3], NULL, 10) : 256;
	rng_state = mix(argc > 4 ? strtoull(argv[4], NULL, 10) : 1) | 1;
	if (mib == 0 || mib > (1u << 20) || every == 0) {
		fprintf(stderr, "usage: farmem_leakserver [MIB(1-1048576) [SECONDS [LEAK_EVERY(>0) [SEED]]]]\n");
		return 2;
	}
	signal(SIGUSR1, on_usr1);
	signal(SIGUSR2, on_usr2);
	nsess = (mib << 20) / (272 + 8);
	sessions = malloc(nsess * sizeof *sessions);
	if (!sessions) {
		perror("malloc");
		return 2;
	}
	for (uint64_t i = 0; i < nsess; i++) {
		struct session *s = malloc(sizeof *s);
		if (!s) {
			perror("malloc");
			return 2;
		}
		s->next = NULL;
		s->id = i;
		s->gen = 0;
		for (int k = 0; k < WORDS; k++)
			s->w[k] = val(i, 0, k);
		sessions[i] = s;
	}
	printf("ready heap=%llu pid=%d sessions=%llu\n", (unsigned long long)(nsess * (272 + 8)), getpid(),
	       (unsigned long long)nsess);
	fflush(stdout);

	double t0 = now(), deadline = t0 + seconds;
	uint64_t ops = 0, bad = 0, leaks = 0, leaked = 0;
	while (!stop) {
		if ((ops & 255) == 0 && now() >= deadline)
			break;
		if (mark)
			progress(ops);
		int leak = ops % every == every - 1;
		bad += request(ops, leak, &leaked);
		leaks += leak;
		ops++;
	}
	double dt = now() - t0;
	for (uint64_t i = 0; i < nsess; i++)
		for (int k = 0; k < WORDS; k++)
			bad += sessions[i]->w[k] != val(i, sessions[i]->gen, k) || sessions[i]->id != i;
	printf("ops=%llu seconds=%.3f ops_per_s=%.1f leaks=%llu leaked_bytes=%llu mismatches=%llu\n",
	       (unsigned long long)ops, dt, ops / dt, (unsigned long long)leaks, (unsigned long long)leaked,
	       (unsigned long long)bad);
	return bad != 0;
}
