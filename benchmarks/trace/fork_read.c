/* fork_read.c — how fast the tracer can read a copy-on-write fork child
 * (issue #13; run by bench_fork_read.py, which builds it).
 *
 * Usage: fork_read N METHOD[,METHOD…]
 * Starts a target that builds N objects of 64–128 bytes with malloc (as
 * samples/scale_heap.c does) and then forks, on request, a child that only
 * sleeps: the copy-on-write child a fork capture reads.  For each METHOD a
 * fresh child is forked and its whole [heap] is read into a fresh anonymous
 * buffer (recycled pages: the buffer is touched and unmapped first):
 *   vm      process_vm_readv, 1 GiB per call (what fork capture did)
 *   mem     pread of /proc/CHILD/mem, 4 MiB per call
 *   mem1g   pread of /proc/CHILD/mem, 1 GiB per call
 *   mem2t   /proc/CHILD/mem read by two threads, a half each
 *   memhuge /proc/CHILD/mem into a buffer advised MADV_HUGEPAGE
 *   live    process_vm_readv of the target itself (the child still alive)
 *   touch   no read: the buffer written once (the page-fault floor)
 * Prints, per method: wall and CPU seconds of the reader, s/GiB, and how
 * much the read process's private memory grew: the pages process_vm_readv
 * copied inside it (a pinned read of a page still shared after fork
 * unshares it first).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double clock_s(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Private_Clean + Private_Dirty of a process (KiB): the pages it no longer
 * shares (a page unshared by a pinned read is mapped clean) */
static long private_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", pid);
    FILE *f = fopen(path, "r");
    long v = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Private_", 8))
            v += atol(line + 14);
    if (f)
        fclose(f);
    return v;
}

static int heap_range(pid_t pid, unsigned long *lo, unsigned long *hi)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    FILE *f = fopen(path, "r");
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f))
        if (strstr(line, "[heap]"))
            found = sscanf(line, "%lx-%lx", lo, hi) == 2;
    if (f)
        fclose(f);
    return found;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void read_vm(pid_t pid, unsigned long lo, size_t n, char *dst)
{
    const size_t step = (size_t)1 << 30;
    for (size_t off = 0; off < n; off += step) {
        size_t b = n - off < step ? n - off : step;
        struct iovec l = {dst + off, b}, r = {(void *)(lo + off), b};
        if (process_vm_readv(pid, &l, 1, &r, 1, 0) != (ssize_t)b)
            die("process_vm_readv");
    }
}

static void read_mem(pid_t pid, unsigned long lo, size_t n, size_t step, char *dst)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        die("open /proc/PID/mem");
    for (size_t off = 0; off < n;) {
        size_t b = n - off < step ? n - off : step;
        ssize_t got = pread(fd, dst + off, b, (off_t)(lo + off));
        if (got <= 0)
            die("pread /proc/PID/mem");
        off += (size_t)got;
    }
    close(fd);
}

struct half { pid_t pid; unsigned long lo; size_t n; char *dst; };

static void *read_half(void *arg)
{
    struct half *h = arg;
    read_mem(h->pid, h->lo, h->n, (size_t)4 << 20, h->dst);
    return NULL;
}

static char *fresh(size_t n)
{
    char *b = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED)
        die("mmap");
    memset(b, 0, n);            /* recycle pages the guest has already used */
    munmap(b, n);
    b = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED)
        die("mmap");
    return b;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    long nobj = atol(argv[1]);
    int req[2], rep[2];
    if (pipe(req) || pipe(rep))
        die("pipe");
    pid_t target = fork();
    if (target == 0) {
        unsigned long r = 88172645463325252UL;
        void **prev = NULL;
        for (long i = 0; i < nobj; i++) {
            r ^= r << 13; r ^= r >> 7; r ^= r << 17;
            size_t s = 64 + 16 * (r % 5);
            long *p = malloc(s);
            if (!p)
                _exit(1);
            for (size_t k = 0; k < s / 8; k++)
                p[k] = (long)(k * 7 + 1);
            p[0] = (long)prev;
            prev = (void **)p;
        }
        char x;
        while (read(req[0], &x, 1) == 1) {
            pid_t c = fork();
            if (c == 0)
                for (;;)
                    pause();
            if (write(rep[1], &c, sizeof c) != sizeof c)
                _exit(1);
        }
        _exit(0);
    }
    pid_t child = 0;
    unsigned long lo = 0, hi = 0;
    char methods[256];
    snprintf(methods, sizeof methods, "%s", argv[2]);
    for (char *m = strtok(methods, ","); m; m = strtok(NULL, ",")) {
        if (child)
            kill(child, SIGKILL);
        if (write(req[1], "x", 1) != 1 || read(rep[0], &child, sizeof child) != sizeof child)
            die("fork request");
        if (!lo && !heap_range(child, &lo, &hi))
            die("no [heap]");
        size_t n = hi - lo;
        char *dst = fresh(n);
        pid_t read_pid = !strcmp(m, "live") ? target : child;
        long a0 = private_kib(read_pid);
        double w0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        if (!strcmp(m, "vm"))
            read_vm(child, lo, n, dst);
        else if (!strcmp(m, "live"))
            read_vm(target, lo, n, dst);
        else if (!strcmp(m, "mem"))
            read_mem(child, lo, n, (size_t)4 << 20, dst);
        else if (!strcmp(m, "mem1g"))
            read_mem(child, lo, n, (size_t)1 << 30, dst);
        else if (!strcmp(m, "memhuge")) {
            madvise(dst, n, MADV_HUGEPAGE);
            read_mem(child, lo, n, (size_t)4 << 20, dst);
        } else if (!strcmp(m, "mem2t")) {
            size_t h = (n / 2) & ~(size_t)4095;
            struct half a = {child, lo, h, dst}, b = {child, lo + h, n - h, dst + h};
            pthread_t th;
            if (pthread_create(&th, NULL, read_half, &a))
                die("pthread_create");
            read_half(&b);
            pthread_join(th, NULL);
        } else if (!strcmp(m, "touch"))
            memset(dst, 1, n);
        else {
            fprintf(stderr, "unknown method %s\n", m);
            return 2;
        }
        double w = clock_s(CLOCK_MONOTONIC) - w0, c = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        long extra = (private_kib(read_pid) - a0) / 1024;
        printf("%-8s heap %5zu MiB  wall %6.3f s  cpu %6.3f s  %5.2f s/GiB (wall)  copied in the read process %+6ld MiB\n",
               m, n >> 20, w, c, w / ((double)n / (1 << 30)), extra);
        fflush(stdout);
        munmap(dst, n);
    }
    if (child)
        kill(child, SIGKILL);
    kill(target, SIGKILL);
    waitpid(target, NULL, 0);
    return 0;
}
