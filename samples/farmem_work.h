/* What the far-memory workloads (farmem_kv.c, farmem_chase.c, farmem_leakserver.c)
 * share: a mixing function for self-checking values, a monotonic clock, an xorshift
 * generator, and the two signals a benchmark drives them with (SIGUSR1 ends the run,
 * SIGUSR2 asks for a progress line so that a window of the run can be timed). */
#ifndef FARMEM_WORK_H
#define FARMEM_WORK_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static volatile sig_atomic_t stop, mark;

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t rng_state;
static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static void on_usr1(int sig) { (void)sig; stop = 1; }
static void on_usr2(int sig) { (void)sig; mark = 1; }

/* SIGUSR2: a progress line */
static void progress(uint64_t ops)
{
	mark = 0;
	printf("mark ops=%llu t=%.6f\n", (unsigned long long)ops, now());
	fflush(stdout);
}

#endif
