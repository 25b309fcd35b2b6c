/* libmtfarmem.so: the far-memory helper that `mappedtrace farmem run` preloads.
 *
 * At load it creates a userfaultfd owned by this process (so the descriptor,
 * and every fault queued on it, survives a pager that dies) and one helper
 * thread that listens on a unix socket named by $MTFARMEM_SOCK.  The pager
 * finds the uffd in /proc/PID/fd, takes it with pidfd_getfd, registers
 * ranges and serves faults itself; it connects to the socket for the rest.
 * The helper does only what must be done inside this address space: drop
 * pages with madvise(MADV_DONTNEED) on request (DROP), and give the
 * descriptor up on detach (RELEASE).  No per-allocation bookkeeping, no
 * malloc after start-up, no signal handlers: one thread, one uffd, one socket,
 * syscalls only on request.
 *
 * Build: cc -O2 -shared -fPIC -pthread -o libmtfarmem.so mtfarmem.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

/* the wire format: every request is a header and n ranges; every reply one struct */
enum { MT_HELLO = 1, MT_DROP = 2, MT_PING = 3, MT_RELEASE = 4 };
#define MT_MAX_RANGES 4096
struct mt_req { uint32_t op, n; };
/* Ranges travel and are kept as page numbers (address >> 12), never as addresses:
 * this library's data is scanned conservatively by the pager's own heap graph (it
 * has no maps), and addresses of dropped pages kept here would be roots that keep
 * whatever lies there "reachable" (seen: a leaked list looked live). */
#define MT_PAGE_SHIFT 12
struct mt_range { uint64_t start, len; };
struct mt_reply { int32_t rc, err; uint64_t value, features, last_drop; };

static int mt_uffd = -1;
static uint64_t mt_features;
static int mt_listen = -1;
static char mt_path[108];
static struct mt_range mt_ranges[MT_MAX_RANGES];   /* static: the thread never mallocs */
/* The last DROP request, kept until the next one: a pager that takes over from
 * one killed in the middle of a drop reads it (HELLO gives its address) to tell
 * that drop's REMOVE events from the program's own madvise. */
static struct { uint64_t n; struct mt_range r[MT_MAX_RANGES]; } mt_last;

/* madvise(DONTNEED) of pages [page, page + npages) with the address made only in
 * the syscall's argument registers and cleared right after: a copy left in a
 * callee-saved register would be saved in a frame of this thread's stack (read()
 * below saves them while it waits), and the pager's heap graph scans this
 * thread conservatively (no maps): the dropped pages' objects would look live. */
static long mt_drop_pages(uint64_t page, uint64_t npages)
{
	long ret;
	__asm__ volatile("shl $12, %%rdi\n\t"
			 "shl $12, %%rsi\n\t"
			 "syscall\n\t"
			 "xor %%edi, %%edi\n\t"
			 "xor %%esi, %%esi\n\t"
			 : "=a"(ret), "+D"(page), "+S"(npages)
			 : "a"((long)SYS_madvise), "d"((long)MADV_DONTNEED)
			 : "rcx", "r11", "memory");
	return ret;
}

static int mt_full_io(int fd, void *buf, size_t n, int writing)
{
	char *p = buf;
	while (n) {
		/* MSG_NOSIGNAL: a pager that died must not take the program down with SIGPIPE */
		ssize_t r = writing ? send(fd, p, n, MSG_NOSIGNAL) : read(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int mt_uffd_create(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -1;
	/* ask for what follows the program's own munmap, mremap, madvise and fork
	 * (a fork child gets a userfaultfd of its own, handed to the pager, which
	 * puts the child's paged-out pages back: see the README), and the faulting
	 * thread's id */
	uint64_t want = UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP |
			UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_PAGEFAULT_FLAG_WP |
			UFFD_FEATURE_EVENT_FORK |
			UFFD_FEATURE_THREAD_ID;     /* the pager tells its own reads' faults apart */
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	/* probe, then ask for the wanted subset the kernel has */
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		close(fd);
		return -1;
	}
	uint64_t have = api.features;
	close(fd);
	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -1;
	api.api = UFFD_API;
	api.features = want & have;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		close(fd);
		return -1;
	}
	mt_features = api.features;
	mt_uffd = fd;
	return 0;
}

static void mt_serve(int c)
{
	struct mt_req q;
	while (mt_full_io(c, &q, sizeof q, 0) == 0) {
		struct mt_reply r = { 0, 0, 0, mt_features, (uint64_t)(uintptr_t)&mt_last };
		if (q.n > MT_MAX_RANGES)
			return;                 /* a bad request: drop the connection */
		if (q.n && mt_full_io(c, mt_ranges, q.n * sizeof mt_ranges[0], 0))
			return;
		switch (q.op) {
		case MT_HELLO:
			r.value = (uint64_t)(int64_t)mt_uffd;
			break;
		case MT_PING:
			break;
		case MT_DROP:
			memcpy(mt_last.r, mt_ranges, q.n * sizeof mt_ranges[0]);
			mt_last.n = q.n;
			for (uint32_t i = 0; i < q.n; i++) {
				long rc = mt_drop_pages(mt_ranges[i].start, mt_ranges[i].len);
				if (rc < 0) {
					r.rc = -1;
					r.err = (int)-rc;
					break;
				}
				r.value++;
			}
			break;
		case MT_RELEASE:
			if (mt_uffd >= 0)
				close(mt_uffd);
			mt_uffd = -1;
			break;
		default:
			r.rc = -1;
			r.err = EINVAL;
		}
		if (mt_full_io(c, &r, sizeof r, 1))
			return;
	}
}

static void *mt_thread(void *arg)
{
	(void)arg;
	for (;;) {
		int c = accept4(mt_listen, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return NULL;
		}
		mt_serve(c);
		close(c);
	}
}

__attribute__((constructor)) static void mt_init(void)
{
	const char *path = getenv("MTFARMEM_SOCK");
	if (!path || !*path || strlen(path) >= sizeof mt_path)
		return;
	strcpy(mt_path, path);
	/* children and exec'd programs do not inherit the helper */
	unsetenv("MTFARMEM_SOCK");
	if (mt_uffd_create()) {
		fprintf(stderr, "mtfarmem: userfaultfd: %s; the program runs without far memory\n", strerror(errno));
		return;
	}
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	strcpy(a.sun_path, mt_path);
	mt_listen = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	unlink(mt_path);
	mode_t old = umask(077);
	int bad = mt_listen < 0 || bind(mt_listen, (struct sockaddr *)&a, sizeof a) || listen(mt_listen, 4);
	umask(old);
	pthread_t t;
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&at, 64 * 1024);
	if (bad || pthread_create(&t, &at, mt_thread, NULL)) {
		fprintf(stderr, "mtfarmem: control socket %s: %s; the program runs without far memory\n",
			mt_path, strerror(errno));
		if (mt_listen >= 0)
			close(mt_listen);
		close(mt_uffd);
		mt_uffd = -1;
		return;
	}
	pthread_attr_destroy(&at);
	pthread_setname_np(t, "mtfarmem");
}
