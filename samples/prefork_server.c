/* prefork_server: a pre-fork server with known leaks in every process, for
 * `mappedtrace leaks --tree` (tests/test_tree.py).
 *
 * Usage: prefork_server WORKERS [vanish]
 *   The master leaks 2 objects, forks WORKERS workers, then leaks 1 more.
 *   Worker i (1-based) allocates 3000 blocks it keeps (its heap grows past
 *   what it inherited: a second [heap] mapping) and leaks i objects of its
 *   own; the master's first 2 leaks are leaked in every worker too (their
 *   copy of the master's heap).  With "vanish", one more worker (leaking
 *   nothing) exits as soon as the master is stopped by a tracer, so that a
 *   --tree check finds it gone when its turn comes.
 * Every process prints its own lines (one write each):
 *     PID leak 0xADDR USABLE       (its leaks; a worker's include the inherited two)
 *     PID role master|worker|vanish
 * then the master prints "ready" once every worker has, and all block until
 * stdin closes (workers die with the master: PR_SET_PDEATHSIG).
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

struct item { struct item *next; long id; char tag[24]; };

struct item *kept;              /* what every process keeps: reachable */
static void *inherited[2];
static int sync_pipe[2];

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char line[256];
    int n = snprintf(line, sizeof line, "%d ", (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    line[n++] = '\n';
    if (write(1, line, (size_t)n) != n)     /* one write: lines of processes do not mix */
        _exit(3);
}

__attribute__((noinline)) static void keep(int n, long base)
{
    for (int i = 0; i < n; i++) {
        struct item *it = calloc(1, sizeof *it);
        it->id = base + i;
        it->next = kept;
        kept = it;
    }
}

__attribute__((noinline)) static void *leak_one(size_t size)
{
    char *p = malloc(size);
    memset(p, 'L', size);
    return p;
}

__attribute__((noinline)) static void leak(int n, size_t base)
{
    for (int i = 0; i < n; i++) {
        void *p = leak_one(base + 16 * (size_t)i);
        say("leak %p %zu", p, malloc_usable_size(p));
    }
}

/* Zero the dead stack below main, where leak()/say() left copies of the
 * leaked pointers: the blocked read() frame (libc, no maps) is scanned
 * conservatively and would find them. */
__attribute__((noinline)) static void scrub(void)
{
    volatile long dead[2048];
    for (int i = 0; i < 2048; i++)
        dead[i] = 0;
}

static void block(void)
{
    char c;
    scrub();
    while (read(0, &c, 1) > 0) {}
}

int main(int argc, char **argv)
{
    int workers = argc > 1 ? atoi(argv[1]) : 3;
    int vanish = argc > 2 && !strcmp(argv[2], "vanish");
    pid_t master = getpid();
    keep(10, 0);
    for (int i = 0; i < 2; i++)
        inherited[i] = leak_one(300 + 8 * (size_t)i);
    if (pipe(sync_pipe))
        return 1;
    for (int w = 1; w <= workers + vanish; w++) {
        pid_t pid = fork();
        if (pid < 0)
            return 1;
        if (pid > 0)
            continue;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (w > workers) {                  /* the vanishing worker */
            say("role vanish");
            if (write(sync_pipe[1], "v", 1) != 1)
                _exit(3);
            char path[64], buf[512];
            snprintf(path, sizeof path, "/proc/%d/stat", (int)master);
            for (long k = 0; k < 600000; k++) {        /* at most ~10 minutes */
                FILE *f = fopen(path, "r");
                if (!f)
                    _exit(0);
                size_t n = fread(buf, 1, sizeof buf - 1, f);
                fclose(f);
                buf[n] = 0;
                char *r = strrchr(buf, ')');
                if (r && r[1] == ' ' && r[2] == 't')   /* the master is in a tracing stop */
                    _exit(0);
                usleep(1000);
            }
            _exit(0);
        }
        keep(3000, 1000 * w);
        for (int i = 0; i < 2; i++)
            say("leak %p %zu", inherited[i], malloc_usable_size(inherited[i]));
        inherited[0] = inherited[1] = NULL;
        leak(w, 40 + 32 * (size_t)w);
        say("role worker");
        if (write(sync_pipe[1], "w", 1) != 1)
            _exit(3);
        block();
        _exit(0);
    }
    for (int i = 0; i < 2; i++)
        say("leak %p %zu", inherited[i], malloc_usable_size(inherited[i]));
    inherited[0] = inherited[1] = NULL;
    leak(1, 1000);
    say("role master");
    for (int w = 0; w < workers + vanish; w++) {
        char c;
        if (read(sync_pipe[0], &c, 1) != 1)
            return 1;
    }
    if (write(1, "ready\n", 6) != 6)
        return 3;
    block();
    return 0;
}
