/* _mtfs.h: what the three parts of libmtfmserve.so share.
 *
 *   _serve.c  the fault loop, the page table, the prefetch cache, the API Python calls
 *   _store.c  the store clients: a file per page, Redis spoken in RESP
 *   _evict.c  the eviction batch: write-protect, read, hash, put, drop
 *
 * Build: cc -O2 -shared -fPIC -pthread -o libmtfmserve.so _serve.c _store.c _evict.c
 */
#ifndef MTFS_H
#define MTFS_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096ULL
#define MAXMSG 512              /* uffd messages per read */
#define MAXQ 2048               /* faults waiting in one round (retries + new) */
#define MAXPF 256               /* prefetched pages per round trip */
#define LATN 20000              /* fault latencies kept for the median and p99 */
#define RECENTN 4096            /* demand-faulted pages kept for the graph thread */
#define HINTN 4096              /* hinted pages waiting to be prefetched */
#define MAXDROP 4096            /* runs of one drop request */
#define MAXPEND 4096            /* REMOVE events held until HELLO (resume) */
/* How long a fault of the program waits for room under the budget before it is served over
 * it (counted: faults_over_budget).  With the faulting thread's id (UFFD_FEATURE_THREAD_ID)
 * the pager's own reads of the program (they fault too, and must not wait for the evictor)
 * are told apart and served at once, so the program's faults wait for the evictor: only an
 * evictor that stopped making room (a bug, a store that refuses writes) lets them through,
 * after ROOM_WAIT_MAX.  A helper without the feature (one loaded by an older build) keeps
 * the old short wait, ROOM_WAIT_BLIND. */
#define ROOM_WAIT_MAX 10.0
#define ROOM_WAIT_BLIND 0.25
#define EVB 1024                /* pages of one eviction batch (mtfs_evict) */

enum { ST_FILE = 1, ST_REDIS = 2 };
/* table entry flags */
enum {
	F_STORED = 1,           /* the store holds this page: `hash` is its copy's */
	F_ZERO = 2,             /* ... and the copy is all zeros (no key in the store) */
	F_REMOTE = 4,           /* dropped by the pager, not served back since */
	F_EVICTING = 8,         /* being evicted: write faults wait, missing faults retry */
	F_INVALID = 16,         /* removed by the program while being evicted: do not drop */
	F_DEFERRED = 32,        /* a write fault waits for the eviction to end */
	F_CACHED = 64,          /* prefetched, in the cache at `slot` */
	F_COMMITTED = 128,      /* being evicted, its copy recorded: the drop comes next */
};

struct ent { uint64_t page, hash; uint32_t flags, slot; };

struct map { struct ent *e; uint64_t cap, n; };

struct store {
	int kind, fd, port, db;
	char dir[4096], host[256], pass[256], unix_path[108], ns[128], url[512];
	char *wbuf; size_t wlen, wcap;
	char rb[1 << 16]; size_t rpos, rlen;
	char err[256];
};

/* everything Python reads: plain counters, written under `mu` */
struct fq { uint64_t q[MAXQ]; double qt[MAXQ]; uint8_t own[MAXQ]; uint32_t nq; };

struct mtfs_stats {
	uint64_t faults, zero_faults, bytes_fetched, faults_waited_for_room, store_round_trips;
	uint64_t events_remove, events_unmap, events_remap, removed_by_program, remapped, wp_faults;
	uint64_t prefetched, prefetch_hits, prefetch_unused, hinted, copy_errors, store_errors, faults_over_budget, graph_prefetched;
	uint64_t cycle, nlat, recent_n, remote_pages, stored_pages;
	int64_t resident_est;
	uint64_t installed;             /* pages put into the program by UFFDIO_COPY, ever */
	uint64_t faults_pager_own;      /* faults of the pager's own reads, served without waiting */
	uint64_t readahead;             /* prefetched pages put into the program (no fault for them) */
	uint64_t graph_readahead;       /* ... of them, pages of the graph's lists or hints */
	uint64_t leaked_not_prefetched; /* pages left out of a prefetch: the graph says leaked */
	uint64_t forks;                 /* the program's forks followed (UFFD_EVENT_FORK) */
	uint64_t forks_own;             /* ... the pager's own (the heap graph's fork snapshot) */
	uint64_t fork_pages_restored;   /* pages put into fork children from the store */
	uint64_t fork_events_child;     /* the children's own events read while they were restored */
	double fork_seconds;            /* time the loop spent restoring children */
};

struct mtfs {
	/* set by Python before mtfs_run */
	int uffd, kick_fd, resume, hello_done;
	volatile int stop;
	int busy;                       /* handling a batch of messages it read */
	int64_t local;
	int pf_neigh;
	uint32_t cache_pages;
	struct mtfs_stats st;
	char blocked[320];              /* why faults wait; "" when they do not */
	char warning[320];              /* the last unexpected error */
	double lat[LATN];
	uint64_t recent[RECENTN];
	/* private */
	pthread_mutex_t mu;
	struct map m;
	struct store loop_st, aux_st;   /* the loop's connection, and detach's */
	uint8_t *cache; uint64_t *cache_page; uint32_t cache_hand;
	uint64_t drops[MAXDROP][2]; uint32_t ndrops;
	uint64_t foreign[MAXDROP][2]; uint32_t nforeign;
	uint64_t pend[MAXPEND][2]; uint32_t npend;
	uint64_t hints[HINTN]; uint32_t nhints;
	/* the heap graph's page edges (CSR over sorted source pages), from Python */
	uint64_t *g_keys, *g_ptr, *g_adj; uint64_t g_n; int g_depth;
	struct fq lq;                   /* the loop's faults waiting to be served */
	int own_tid;                    /* messages carry the faulting thread (UFFD_FEATURE_THREAD_ID) */
	int readahead;                  /* prefetched pages into the program while there is room */
	int graph_ra;                   /* ... of the graph's (and hints'), at most this many a round trip */
	/* pages the heap graph says hold only leaked objects (sorted): never prefetched */
	uint64_t *leaked; uint64_t nleaked;
	int own_forks;                  /* forks the pager itself makes now (mtfs_own_fork) */
	/* the registered ranges (from Python): a resumed pager's fork restore asks the store
	 * for every page of them its table does not name */
	uint64_t (*ranges)[2]; uint32_t nranges;
	/* the evictor (_evict.c), set by mtfs_evict_setup */
	int pid, pagemap_fd, helper_fd;
	struct store ev_st;             /* the evictor's own store connection */
	uint8_t *ev_buf;                /* EVB pages read from the program */
};


#define MTFS_HIDDEN __attribute__((visibility("hidden")))

extern const uint8_t zero_page[PAGE];

MTFS_HIDDEN double now(void);
MTFS_HIDDEN void setmsg(char *dst, size_t n, const char *fmt, ...);
MTFS_HIDDEN struct ent *map_find(struct map *m, uint64_t page);
MTFS_HIDDEN int map_grow(struct map *m);
MTFS_HIDDEN struct ent *map_get(struct map *m, uint64_t page);
MTFS_HIDDEN void map_del(struct map *m, struct ent *e);
MTFS_HIDDEN void cache_forget(struct mtfs *s, struct ent *e, int used);
MTFS_HIDDEN void put_or_drop(struct mtfs *s, struct ent *e);
MTFS_HIDDEN void cache_put(struct mtfs *s, uint64_t page, const uint8_t *data);
MTFS_HIDDEN void key_of(const struct store *st, uint64_t page, char *out, size_t n);
MTFS_HIDDEN void path_of(const struct store *st, uint64_t page, char *out, size_t n);
MTFS_HIDDEN void r_close(struct store *st);
MTFS_HIDDEN int r_connect(struct store *st);
MTFS_HIDDEN int store_get(struct store *st, const uint64_t *pages, uint32_t n, uint8_t *bufs, int8_t *found);
MTFS_HIDDEN int store_del(struct store *st, const uint64_t *pages, uint32_t n);
MTFS_HIDDEN int store_move(struct store *st, const uint64_t *from, const uint64_t *to, uint32_t n);
MTFS_HIDDEN int w_cmd(struct store *st, int argc, const char **argv, const size_t *lens);
MTFS_HIDDEN int w_flush(struct store *st, const char *what);
MTFS_HIDDEN int r_simple(struct store *st, const char *what, long long *ret);
MTFS_HIDDEN void uffd_wake(int fd, uint64_t start, uint64_t len);
MTFS_HIDDEN void uffd_unprotect(int fd, uint64_t page);
MTFS_HIDDEN void blocked_set(struct mtfs *s, const char *msg);
MTFS_HIDDEN int store_put(struct store *st, const uint64_t *pages, uint32_t n, const uint8_t *const *data,
                          const uint64_t *del, uint32_t ndel);
MTFS_HIDDEN void mtfs_dropping(struct mtfs *s, const uint64_t *runs, uint32_t n);
void mtfs_quiesce(struct mtfs *s);

#endif
