/* regs_heartbeat: a target that checks its own registers and memory, for the
 * kill-safety tests (a tracer SIGKILLed at any point must leave it running,
 * exactly as it was).
 *
 *   regs_heartbeat spin|idle
 *
 * spin: the main thread runs a loop that keeps known values in rbx, r12–r15
 *       and xmm8 (ymm8 with AVX2) and compares them on every iteration; a
 *       reader thread waits in read(0).
 * idle: the main thread waits in read(0) itself (every thread is then in a
 *       system call: the one borrowed for a fork is interrupted in one).
 * Both: a heartbeat thread counts 2 ms sleeps (clock_nanosleep), and 64 KiB
 * of heap hold a known pattern.
 *
 * Prints "ready PID".  Reads stdin to end-of-file, expecting exactly the
 * bytes "stop\n"; then prints "ok ITERATIONS BEATS" and exits 0.  A register,
 * the pattern or the input found wrong prints "bad WHAT" and exits 3.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile int stop;
static volatile unsigned long beats;
static uint64_t *pattern;
enum { NPAT = 8192 };

static void bad(const char *what)
{
    printf("bad %s\n", what);
    fflush(stdout);
    _exit(3);
}

static void *heartbeat(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 2000000};
    while (!stop) {
        clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
        beats++;
    }
    return NULL;
}

/* read stdin to EOF; it must be exactly "stop\n" (a restarted read that lost
 * or doubled bytes, or returned an error, shows here) */
static void read_input(void)
{
    char buf[64];
    size_t n = 0;
    for (;;) {
        ssize_t r = read(0, buf + n, sizeof buf - n);
        if (r < 0)
            bad(errno == EINTR ? "read-eintr" : "read-error");
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == sizeof buf)
            bad("read-too-long");
    }
    if (n != 5 || memcmp(buf, "stop\n", 5) != 0)
        bad("read-data");
}

static void *reader(void *arg)
{
    (void)arg;
    read_input();
    stop = 1;
    return NULL;
}

static unsigned long spin(void)
{
    unsigned long iters = 0, fail = 0;
    __asm__ volatile(
        "movabs $0x1111111111111111, %%rbx\n\t"
        "movabs $0x2222222222222222, %%r12\n\t"
        "movabs $0x3333333333333333, %%r13\n\t"
        "movabs $0x4444444444444444, %%r14\n\t"
        "movabs $0x5555555555555555, %%r15\n\t"
        "movq %%r12, %%xmm8\n\t"
        "pinsrq $1, %%r13, %%xmm8\n\t"
#ifdef __AVX2__
        "vinserti128 $1, %%xmm8, %%ymm8, %%ymm8\n\t"
#endif
        "1:\n\t"
        "movabs $0x1111111111111111, %%rax\n\tcmp %%rax, %%rbx\n\tjne 2f\n\t"
        "movabs $0x2222222222222222, %%rax\n\tcmp %%rax, %%r12\n\tjne 2f\n\t"
        "movabs $0x3333333333333333, %%rax\n\tcmp %%rax, %%r13\n\tjne 2f\n\t"
        "movabs $0x4444444444444444, %%rax\n\tcmp %%rax, %%r14\n\tjne 2f\n\t"
        "movabs $0x5555555555555555, %%rax\n\tcmp %%rax, %%r15\n\tjne 2f\n\t"
        "movq %%xmm8, %%rax\n\tcmp %%r12, %%rax\n\tjne 2f\n\t"
        "pextrq $1, %%xmm8, %%rax\n\tcmp %%r13, %%rax\n\tjne 2f\n\t"
#ifdef __AVX2__
        "vextracti128 $1, %%ymm8, %%xmm9\n\t"
        "movq %%xmm9, %%rax\n\tcmp %%r12, %%rax\n\tjne 2f\n\t"
        "pextrq $1, %%xmm9, %%rax\n\tcmp %%r13, %%rax\n\tjne 2f\n\t"
#endif
        "incq %[it]\n\t"
        "cmpl $0, %[stop]\n\t"
        "je 1b\n\t"
        "jmp 3f\n"
        "2:\n\t"
        "movq $1, %[fail]\n"
        "3:\n\t"
#ifdef __AVX2__
        "vzeroupper\n"
#endif
        : [it] "+m"(iters), [fail] "+m"(fail)
        : [stop] "m"(stop)
        : "rax", "rbx", "r12", "r13", "r14", "r15", "xmm8", "xmm9", "memory", "cc");
    if (fail)
        bad("register");
    return iters;
}

int main(int argc, char **argv)
{
    int idle = argc > 1 && strcmp(argv[1], "idle") == 0;
    pattern = malloc(NPAT * sizeof *pattern);
    for (size_t i = 0; i < NPAT; i++)
        pattern[i] = i * 0x9E3779B97F4A7C15ULL;
    pthread_t hb, rd;
    pthread_create(&hb, NULL, heartbeat, NULL);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    unsigned long iters = 0;
    if (idle) {
        read_input();
        stop = 1;
    } else {
        pthread_create(&rd, NULL, reader, NULL);
        iters = spin();
        pthread_join(rd, NULL);
    }
    pthread_join(hb, NULL);
    for (size_t i = 0; i < NPAT; i++)
        if (pattern[i] != i * 0x9E3779B97F4A7C15ULL)
            bad("memory");
    printf("ok %lu %lu\n", iters, beats);
    return 0;
}
