/* farmem_kv: key-value lookups with a Zipf skew over linked records.
 *
 *   farmem_kv [MIB [SECONDS [THETA [SEED]]]]     (defaults 64 10 0.99 1)
 *
 * A chained hash table (a bucket array of pointers, held by the global `table`) of
 * 256-byte records, one per key 0..N-1, inserted in a random order (so a
 * chain's records, and a key's neighbours, sit on unrelated pages).  Then
 * lookups: keys drawn from a Zipf distribution of skew THETA over their
 * ranks (Gray et al.'s generator, as in YCSB), a rank scrambled into a key
 * by a hash (YCSB's "scrambled Zipfian": the hot keys are spread over the
 * heap); 95 % reads that check every word of the record, 5 % updates that
 * write a new generation.  A key that is not found, or a word that is not
 * what the key and generation give, is a mismatch.  At the end every chain
 * is walked: N records, each one right.  Prints
 *   ready heap=BYTES pid=PID records=N
 * once built, `mark ops=N t=SECONDS` on SIGUSR2, and at the end (SECONDS, or SIGUSR1)
 *   ops=LOOKUPS seconds=S ops_per_s=X mismatches=M
 */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "farmem_work.h"

#define WORDS 29
struct rec {
	struct rec *next;
	uint64_t key, gen;
	uint64_t w[WORDS];
};

/* The bucket array as a flexible array member: its slots are typed (a bare
 * `struct rec **` heap array is read conservatively, issue #11's sound typing,
 * and what it reaches is untyped: no exact edges for the graph) */
struct table {
	uint64_t n;
	struct rec *b[];
};
struct table *table;                    /* the root: nbuckets chains */
static uint64_t nbuckets, nkeys;

static uint64_t val(uint64_t key, uint64_t gen, int i) { return mix(key * 131 + (gen << 40) + (uint64_t)i); }

static double unif(void) { return (rnd() >> 11) * (1.0 / 9007199254740992.0); }

/* Gray et al., "Quickly generating billion-record synthetic databases" (SIGMOD '94) */
static double z_theta, z_alpha, z_zetan, z_eta;
static void zipf_init(uint64_t n, double theta)
{
	double zetan = 0;
	for (uint64_t i = 1; i <= n; i++)
		zetan += 1.0 / pow((double)i, theta);
	double zeta2 = 1.0 + 1.0 / pow(2.0, theta);
	z_theta = theta;
	z_alpha = 1.0 / (1.0 - theta);
	z_zetan = zetan;
	z_eta = (1.0 - pow(2.0 / n, 1.0 - theta)) / (1.0 - zeta2 / zetan);
}

static uint64_t zipf_rank(void)
{
	double u = unif(), uz = u * z_zetan;
	if (uz < 1.0)
		return 0;
	if (uz < 1.0 + pow(0.5, z_theta))
		return 1;
	uint64_t r = (uint64_t)(nkeys * pow(z_eta * u - z_eta + 1.0, z_alpha));
	return r < nkeys ? r : nkeys - 1;
}

static struct rec *find(uint64_t key)
{
	struct rec *r = table->b[mix(key ^ 0x5bd1e995) % nbuckets];
	while (r && r->key != key)
		r = r->next;
	return r;
}

static uint64_t check(const struct rec *r, uint64_t key)
{
	uint64_t bad = 0;
	for (int i = 0; i < WORDS; i++)
		bad |= r->w[i] != val(key, r->gen, i);
	return bad;
}

int main(int argc, char **argv)
{
	uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 64;
	double seconds = argc > 2 ? atof(argv[2]) : 10;
	double theta = argc > 3 ? atof(argv[3]) : 0.99;
	rng_state = mix(argc > 4 ? strtoull(argv[4], NULL, 10) : 1) | 1;
	if (mib == 0 || mib > (1u << 20) || !(theta > 0 && theta < 1)) {
		fprintf(stderr, "usage: farmem_kv [MIB(1-1048576) [SECONDS [THETA(0-1) [SEED]]]]\n");
		return 2;
	}
	signal(SIGUSR1, on_usr1);
	signal(SIGUSR2, on_usr2);
	nkeys = (mib << 20) / (272 + 4);        /* a record's chunk, and its share of the buckets */
	nbuckets = nkeys / 2 + 1;
	table = calloc(1, sizeof *table + nbuckets * sizeof table->b[0]);
	uint32_t *perm = malloc(nkeys * sizeof *perm);
	if (!table || !perm) {
		perror("malloc");
		return 2;
	}
	for (uint64_t i = 0; i < nkeys; i++)
		perm[i] = (uint32_t)i;
	for (uint64_t i = nkeys - 1; i > 0; i--) {
		uint64_t j = rnd() % (i + 1);
		uint32_t t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (uint64_t i = 0; i < nkeys; i++) {
		struct rec *r = malloc(sizeof *r);
		if (!r) {
			perror("malloc");
			return 2;
		}
		r->key = perm[i];
		r->gen = 0;
		for (int k = 0; k < WORDS; k++)
			r->w[k] = val(r->key, 0, k);
		struct rec **b = &table->b[mix(r->key ^ 0x5bd1e995) % nbuckets];
		r->next = *b;
		*b = r;
	}
	free(perm);
	table->n = nbuckets;
	zipf_init(nkeys, theta);
	printf("ready heap=%llu pid=%d records=%llu\n", (unsigned long long)(nkeys * 272 + nbuckets * 8), getpid(),
	       (unsigned long long)nkeys);
	fflush(stdout);

	double t0 = now(), deadline = t0 + seconds;
	uint64_t ops = 0, bad = 0;
	while (!stop) {
		if ((ops & 1023) == 0 && now() >= deadline)
			break;
		if (mark)
			progress(ops);
		uint64_t key = mix(zipf_rank() * 0xcbf29ce484222325ull) % nkeys;
		struct rec *r = find(key);
		ops++;
		if (!r) {
			bad++;
			continue;
		}
		bad += check(r, key);
		if (rnd() % 100 < 5) {
			r->gen++;
			for (int k = 0; k < WORDS; k++)
				r->w[k] = val(key, r->gen, k);
		}
	}
	double dt = now() - t0;
	uint64_t seen = 0;
	for (uint64_t b = 0; b < nbuckets; b++)
		for (struct rec *r = table->b[b]; r && seen <= nkeys; r = r->next) {
			seen++;
			bad += check(r, r->key) || mix(r->key ^ 0x5bd1e995) % nbuckets != b;
		}
	bad += seen != nkeys;
	printf("ops=%llu seconds=%.3f ops_per_s=%.1f mismatches=%llu\n", (unsigned long long)ops, dt, ops / dt,
	       (unsigned long long)bad);
	return bad != 0;
}
