/* libmtfmserve.so: the pager's compiled fault-serving loop.
 *
 * Runs in the pager process (not in the program), in a thread that Python
 * starts and that holds no GIL while it runs (cffi releases it).  It reads the
 * userfaultfd the pager took from the program, fetches missing pages from the
 * store (a file per page with pread, or Redis MGET spoken in RESP over one
 * socket), installs them with UFFDIO_COPY, and follows the program's own
 * madvise(DONTNEED), munmap and mremap (events REMOVE, UNMAP, REMAP).  Python
 * keeps the policy: which pages to evict, when, the status file.
 *
 * It owns the one table that says which pages the store holds (page -> hash
 * of the store's copy), so the fault path never waits for Python; the
 * evictor (_evict.c) changes it under the same lock.
 *
 * Prefetch: a fault that goes to the store also asks for up to `pf_neigh`
 * following pages that are in the store, and for pages Python hinted (the
 * heap graph's edges), in the same round trip.  Prefetched pages go into the
 * program while half the room left under the budget allows (readahead: each
 * saves the program a fault; see serve() for why the program's own madvise
 * cannot race with it), else to a bounded cache in this process, like the
 * kernel's swap cache: a fault on a cached page is served from here without a
 * round trip.  The cache's accuracy is exact (hits / pages cached); whether a
 * page read ahead was used is not known (no accessed bit is visible from
 * here).
 *
 * Build (with _store.c, _evict.c; see _mtfs.h):
 *   cc -O2 -shared -fPIC -pthread -o libmtfmserve.so _serve.c _store.c _evict.c
 */
#define _GNU_SOURCE
#include "_mtfs.h"

const uint8_t zero_page[PAGE] __attribute__((aligned(4096)));

MTFS_HIDDEN double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

MTFS_HIDDEN void setmsg(char *dst, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(dst, n, fmt, ap);
	va_end(ap);
}

/* ---- the table: open addressing, linear probing, backward-shift deletion ---- */

static uint64_t hslot(const struct map *m, uint64_t page)
{
	return ((page >> 12) * 0x9e3779b97f4a7c15ull) & (m->cap - 1);
}

MTFS_HIDDEN struct ent *map_find(struct map *m, uint64_t page)
{
	if (!m->cap)
		return NULL;
	for (uint64_t i = hslot(m, page);; i = (i + 1) & (m->cap - 1)) {
		if (m->e[i].page == page)
			return &m->e[i];
		if (!m->e[i].page)
			return NULL;
	}
}

MTFS_HIDDEN int map_grow(struct map *m)
{
	uint64_t cap = m->cap ? m->cap * 2 : 1 << 16;
	struct ent *e = calloc(cap, sizeof *e), *old = m->e;
	if (!e)
		return -1;
	uint64_t ocap = m->cap;
	m->e = e;
	m->cap = cap;
	for (uint64_t i = 0; i < ocap; i++) {
		if (!old[i].page)
			continue;
		uint64_t j = hslot(m, old[i].page);
		while (e[j].page)
			j = (j + 1) & (cap - 1);
		e[j] = old[i];
	}
	free(old);
	return 0;
}

/* the entry of `page`, made (flags 0) if absent; NULL only when out of memory */
MTFS_HIDDEN struct ent *map_get(struct map *m, uint64_t page)
{
	struct ent *e = map_find(m, page);
	if (e)
		return e;
	if ((m->n + 1) * 2 > m->cap && map_grow(m))
		return NULL;
	uint64_t i = hslot(m, page);
	while (m->e[i].page)
		i = (i + 1) & (m->cap - 1);
	m->e[i] = (struct ent){ .page = page };
	m->n++;
	return &m->e[i];
}

MTFS_HIDDEN void map_del(struct map *m, struct ent *e)
{
	uint64_t i = (uint64_t)(e - m->e), j = i;
	m->e[i].page = 0;
	m->n--;
	for (;;) {      /* shift back the entries that probed past the hole */
		j = (j + 1) & (m->cap - 1);
		if (!m->e[j].page)
			return;
		uint64_t k = hslot(m, m->e[j].page);
		if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
			m->e[i] = m->e[j];
			m->e[j].page = 0;
			i = j;
		}
	}
}

/* ---- the prefetch cache (FIFO, `cache_pages` slots) ---- */

MTFS_HIDDEN void cache_forget(struct mtfs *s, struct ent *e, int used)
{
	if (!(e->flags & F_CACHED))
		return;
	s->cache_page[e->slot] = 0;
	e->flags &= ~F_CACHED;
	if (!used)
		s->st.prefetch_unused++;
}

MTFS_HIDDEN void put_or_drop(struct mtfs *s, struct ent *e)
{
	if (!e->flags)
		map_del(&s->m, e);
}

MTFS_HIDDEN void cache_put(struct mtfs *s, uint64_t page, const uint8_t *data)
{
	if (!s->cache_pages)
		return;
	uint32_t slot = s->cache_hand;
	s->cache_hand = (s->cache_hand + 1) % s->cache_pages;
	if (s->cache_page[slot]) {
		struct ent *old = map_find(&s->m, s->cache_page[slot]);
		if (old) {
			cache_forget(s, old, 0);
			put_or_drop(s, old);
		}
		s->cache_page[slot] = 0;
	}
	struct ent *e = map_find(&s->m, page);
	if (!e)
		return;
	memcpy(s->cache + (uint64_t)slot * PAGE, data, PAGE);
	s->cache_page[slot] = page;
	e->slot = slot;
	e->flags |= F_CACHED;
	s->st.prefetched++;
}


/* ---- uffd ---- */

static int uffd_copy(int fd, uint64_t dst, const void *src, int wp)
{
	struct uffdio_copy c = { .dst = dst, .src = (uint64_t)(uintptr_t)src, .len = PAGE,
				 .mode = wp ? UFFDIO_COPY_MODE_WP : 0 };
	if (ioctl(fd, UFFDIO_COPY, &c) < 0)
		return errno ? errno : EIO;
	return 0;
}

static int uffd_copy_mode(int fd, uint64_t dst, const void *src, uint64_t mode)
{
	struct uffdio_copy c = { .dst = dst, .src = (uint64_t)(uintptr_t)src, .len = PAGE, .mode = mode };
	if (ioctl(fd, UFFDIO_COPY, &c) < 0)
		return errno ? errno : EIO;
	return 0;
}

MTFS_HIDDEN void uffd_wake(int fd, uint64_t start, uint64_t len)
{
	struct uffdio_range r = { start, len };
	ioctl(fd, UFFDIO_WAKE, &r);
}

MTFS_HIDDEN void uffd_unprotect(int fd, uint64_t page)
{
	struct uffdio_writeprotect w = { .range = { page, PAGE }, .mode = 0 };
	ioctl(fd, UFFDIO_WRITEPROTECT, &w);
}

/* ---- serving faults ---- */

MTFS_HIDDEN void blocked_set(struct mtfs *s, const char *msg)
{
	pthread_mutex_lock(&s->mu);
	setmsg(s->blocked, sizeof s->blocked, "%s (the program waits on its faults)", msg);
	pthread_mutex_unlock(&s->mu);
}

/* Ask the store for page q too (prefetch): only a page the store holds that is
 * remote and not on its way anywhere, and not asked for already.  Returns -1
 * when q is not such a page, 0 when it is asked for already, 1 when added. */
static int is_leaked(const struct mtfs *s, uint64_t q)
{
	uint64_t lo = 0, hi = s->nleaked;
	while (lo < hi) {
		uint64_t mid = (lo + hi) / 2;
		if (s->leaked[mid] < q)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < s->nleaked && s->leaked[lo] == q;
}

static int ask_add(struct mtfs *s, uint64_t *ask, uint64_t *askhash, uint32_t *nask, uint64_t q)
{
	struct ent *e = map_find(&s->m, q);
	if (!e || (e->flags & (F_STORED | F_REMOTE | F_ZERO | F_CACHED | F_EVICTING)) != (F_STORED | F_REMOTE))
		return -1;
	/* a page the graph says is leaked stays out (the program itself faults it in if the
	 * graph was wrong); it ends a run of neighbours like a page not in the store */
	if (s->nleaked && is_leaked(s, q)) {
		s->st.leaked_not_prefetched++;
		return -1;
	}
	for (uint32_t j = 0; j < *nask; j++)
		if (ask[j] == q)
			return 0;
	askhash[*nask] = e->hash;
	ask[(*nask)++] = q;
	return 1;
}

/* Serve the queued faults fq->q[0..nq).  What cannot be served now (no room under
 * the budget, a page being evicted, EAGAIN, a store that does not answer) stays
 * queued for the next round.  `budget`: keep the resident heap under `local`;
 * `prefetch`: ask for neighbours and hints too (not when the batch held the
 * program's own REMOVE/REMAP events: see mtfs_run). */
static void serve(struct mtfs *s, struct fq *fq, struct store *st, int budget, int prefetch)
{
	static __thread uint64_t ask[MAXQ + MAXPF];
	static __thread uint64_t askhash[MAXQ + MAXPF];
	static __thread int8_t found[MAXQ + MAXPF];
	static __thread int8_t src[MAXQ];     /* 0 zero, 1 store, 2 cache */
	static __thread int32_t slot[MAXQ];   /* index into ask / bufs */
	static __thread int8_t wpc[MAXQ];     /* install write-protected (a page being evicted) */
	static __thread uint8_t *bufs;
	static __thread uint8_t *cbuf;        /* pages taken from the cache */
	if (!bufs) {
		bufs = aligned_alloc(PAGE, (MAXQ + MAXPF) * PAGE);
		cbuf = aligned_alloc(PAGE, MAXQ * PAGE);
		if (!bufs || !cbuf) {
			blocked_set(s, "the pager is out of memory");
			return;
		}
	}
	/* dedupe, keeping the first time each page was read */
	uint32_t n = 0;
	for (uint32_t i = 0; i < fq->nq; i++) {
		uint32_t j = 0;
		while (j < n && fq->q[j] != fq->q[i])
			j++;
		if (j == n) {
			fq->q[n] = fq->q[i];
			fq->own[n] = fq->own[i];
			fq->qt[n++] = fq->qt[i];
		} else {
			fq->own[j] |= fq->own[i];
		}
	}
	fq->nq = n;
	uint64_t later[MAXQ];
	double latert[MAXQ];
	uint8_t laterown[MAXQ];
	uint32_t nlater = 0, nask = 0, ndemand_ask = 0, nneigh = 0, now_n = 0;
	uint64_t pages[MAXQ];
	uint8_t owns[MAXQ];
	double times[MAXQ];

	double t_round = now();
	pthread_mutex_lock(&s->mu);
	int64_t room = budget ? (s->local - s->st.resident_est) / (int64_t)PAGE : (int64_t)n;
	if (room < 0)
		room = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t p = fq->q[i];
		struct ent *e = map_find(&s->m, p);
		/* A page being evicted whose copy is recorded (the drop comes next) waits for the
		 * drop.  Before that it is served at once, write-protected (a write then waits for
		 * the drop and refaults): the evictor's own read of the program faults too, and
		 * must not wait for the evictor (seen: both waited for good). */
		int evicting = e && (e->flags & F_EVICTING) && (e->flags & F_COMMITTED);
		wpc[now_n] = e && (e->flags & F_EVICTING) && !evicting;
		/* A fault waits for room while the evictor makes some.  The pager's own reads
		 * of the program (a mapping's first bytes, a page the program just dropped)
		 * fault too and must not wait for the evictor: known by the faulting thread,
		 * they are served at once (counted); without thread ids, after ROOM_WAIT_BLIND.
		 * A fault of the program waits at most ROOM_WAIT_MAX (see _mtfs.h). */
		int full = (int64_t)now_n >= room;
		int own = full && !evicting && fq->own[i];
		int over = full && !evicting && !own &&
			   t_round - fq->qt[i] > (s->own_tid ? ROOM_WAIT_MAX : ROOM_WAIT_BLIND);
		if (own)
			s->st.faults_pager_own++;
		if (over)
			s->st.faults_over_budget++;
		if (evicting || (full && !own && !over)) {
			if (!evicting)
				s->st.faults_waited_for_room++;
			later[nlater] = p;
			laterown[nlater] = fq->own[i];
			latert[nlater++] = fq->qt[i];
			continue;
		}
		pages[now_n] = p;
		owns[now_n] = fq->own[i];
		times[now_n] = fq->qt[i];
		if (e && (e->flags & F_CACHED)) {
			memcpy(cbuf + (uint64_t)now_n * PAGE, s->cache + (uint64_t)e->slot * PAGE, PAGE);
			cache_forget(s, e, 1);
			s->st.prefetch_hits++;
			src[now_n] = 2;
		} else if ((e && (e->flags & F_STORED) && !(e->flags & F_ZERO)) ||
			   (s->resume && !(e && (e->flags & F_STORED)))) {
			slot[now_n] = (int32_t)nask;
			askhash[nask] = e ? e->hash : 0;
			ask[nask++] = p;
			src[now_n] = 1;
		} else {
			src[now_n] = 0;
		}
		now_n++;
	}
	ndemand_ask = nneigh = nask;
	if (prefetch && ndemand_ask) {
		/* neighbours after each page asked for, then the graph's hints */
		for (uint32_t i = 0; i < ndemand_ask && nask < ndemand_ask + MAXPF; i++) {
			for (int k = 1; k <= s->pf_neigh && nask < ndemand_ask + MAXPF; k++) {
				uint64_t q = ask[i] + (uint64_t)k * PAGE;
				if (ask_add(s, ask, askhash, &nask, q) < 0)
					break;
			}
		}
		nneigh = nask;
		/* along the graph's edges, breadth first, from each page asked for */
		if (s->g_n && s->g_depth > 0) {
			uint64_t front[MAXPF * 2], next[MAXPF * 2];
			uint32_t nf = 0, nn, visited = 0;
			for (uint32_t i = 0; i < ndemand_ask && nf < MAXPF * 2; i++)
				front[nf++] = ask[i];
			for (int d = 0; d < s->g_depth && nf && nask < ndemand_ask + MAXPF; d++) {
				nn = 0;
				for (uint32_t i = 0; i < nf && nask < ndemand_ask + MAXPF; i++) {
					uint64_t lo = 0, hi = s->g_n;       /* binary search of the source page */
					while (lo < hi) {
						uint64_t mid = (lo + hi) / 2;
						if (s->g_keys[mid] < front[i])
							lo = mid + 1;
						else
							hi = mid;
					}
					if (lo == s->g_n || s->g_keys[lo] != front[i])
						continue;
					for (uint64_t k = s->g_ptr[lo]; k < s->g_ptr[lo + 1] && visited < MAXPF * 4 &&
								       nask < ndemand_ask + MAXPF; k++, visited++) {
						uint64_t q = s->g_adj[k];
						if (nn < MAXPF * 2)
							next[nn++] = q;
						if (ask_add(s, ask, askhash, &nask, q) > 0)
							s->st.graph_prefetched++;
					}
				}
				memcpy(front, next, nn * sizeof next[0]);
				nf = nn;
			}
		}
		while (s->nhints && nask < ndemand_ask + MAXPF) {
			uint64_t q = s->hints[--s->nhints];
			if (ask_add(s, ask, askhash, &nask, q) > 0)
				s->st.hinted++;
		}
	}
	if (nlater && budget && s->kick_fd >= 0) {
		uint64_t one = 1;
		if (write(s->kick_fd, &one, sizeof one) < 0) {
			/* the evictor wakes on its own interval anyway */
		}
	}
	pthread_mutex_unlock(&s->mu);

	int fetched_ok = 1;
	if (nask) {
		if (store_get(st, ask, nask, bufs, found)) {
			fetched_ok = 0;
			pthread_mutex_lock(&s->mu);
			s->st.store_errors++;
			setmsg(s->blocked, sizeof s->blocked, "%s (the program waits on its faults)", st->err);
			pthread_mutex_unlock(&s->mu);
		} else {
			pthread_mutex_lock(&s->mu);
			s->st.store_round_trips++;
			pthread_mutex_unlock(&s->mu);
		}
	}
	/* install the demand pages */
	uint32_t served = 0, zero = 0, done = 0;
	char why[320] = "";
	double t1;
	for (uint32_t i = 0; i < now_n; i++) {
		const void *data = zero_page;
		if (src[i] == 2) {
			data = cbuf + (uint64_t)i * PAGE;
		} else if (src[i] == 1) {
			int32_t k = slot[i];
			if (!fetched_ok) {
				later[nlater] = pages[i];
				laterown[nlater] = owns[i];
				latert[nlater++] = times[i];
				continue;
			}
			if (found[k] == 1) {
				data = bufs + (uint64_t)k * PAGE;
			} else if (found[k] == 0 && !(askhash[k] || !s->resume)) {
				/* resume: a page this pager never saw and the store does not hold is zero */
			} else if (found[k] == 0) {
				/* the store lost a page it acknowledged: never hand out zeros instead */
				setmsg(why, sizeof why, "store %s has no copy of page %#llx", st->url,
				       (unsigned long long)pages[i]);
				later[nlater] = pages[i];
				laterown[nlater] = owns[i];
				latert[nlater++] = times[i];
				continue;
			} else {
				setmsg(why, sizeof why, "store %s: page %#llx is not %llu bytes", st->url,
				       (unsigned long long)pages[i], PAGE);
				later[nlater] = pages[i];
				laterown[nlater] = owns[i];
				latert[nlater++] = times[i];
				continue;
			}
		}
		int rc = uffd_copy(s->uffd, pages[i], data, wpc[i]);
		if (rc == EAGAIN) {
			later[nlater] = pages[i];
			laterown[nlater] = owns[i];
			latert[nlater++] = times[i];
			if (src[i] == 2) {      /* back into the cache: it was taken out */
				pthread_mutex_lock(&s->mu);
				s->st.prefetch_hits--;
				if (map_find(&s->m, pages[i]))
					cache_put(s, pages[i], data), s->st.prefetched--;
				pthread_mutex_unlock(&s->mu);
			}
			continue;
		}
		if (rc == EEXIST || rc == ENOENT || rc == ESRCH || rc == EFAULT || rc == EINVAL) {
			/* EEXIST: already there; the others: the range went away, the thread retries and sees why */
			uffd_wake(s->uffd, pages[i], PAGE);
		} else if (rc) {
			pthread_mutex_lock(&s->mu);
			s->st.copy_errors++;
			setmsg(s->warning, sizeof s->warning, "UFFDIO_COPY %#llx: %s", (unsigned long long)pages[i],
			       strerror(rc));
			pthread_mutex_unlock(&s->mu);
		}
		served += rc == 0;
		zero += data == zero_page;
		pages[done] = pages[i];
		times[done++] = times[i];
	}
	t1 = now();
	pthread_mutex_lock(&s->mu);
	for (uint32_t i = 0; i < done; i++) {
		struct ent *e = map_find(&s->m, pages[i]);
		if (e) {
			if (e->flags & F_REMOTE)
				s->st.remote_pages--;
			e->flags &= ~F_REMOTE;
			put_or_drop(s, e);
		}
		s->lat[s->st.nlat % LATN] = t1 - times[i];
		s->st.nlat++;
		s->recent[s->st.recent_n % RECENTN] = pages[i];
		s->st.recent_n++;
	}
	/* Prefetched pages, if the table still says the same: into the program while half the
	 * room left under the budget allows (readahead: the fault it saves costs the program a
	 * round trip through this loop), else into the cache.  Readahead takes the neighbours
	 * (ask[ndemand_ask..nneigh)) and at most graph_ra pages of the graph's lists and hints
	 * (ask[nneigh..nask), nearest first): a list holds the next pages of every path that
	 * starts on the faulting page, of which the program walks one, and up to 256 of them
	 * installed pushed out pages the program needed (issue 15).  Safe against the program's own
	 * madvise/munmap/mremap: an event of the program that this loop has not read yet makes
	 * UFFDIO_COPY fail with EAGAIN (then the page goes to the cache), and one it has read
	 * has changed the table already (then the page is not installed at all). */
	uint32_t ra = 0, gra = 0;
	if (fetched_ok) {
		int64_t spare = s->readahead && budget ?
			((s->local - s->st.resident_est) / (int64_t)PAGE - (int64_t)served) / 2 : 0;
		for (uint32_t k = ndemand_ask; k < nask; k++) {
			struct ent *e = map_find(&s->m, ask[k]);
			if (!(found[k] == 1 && e && e->hash == askhash[k] &&
			      (e->flags & (F_STORED | F_REMOTE | F_ZERO | F_CACHED | F_EVICTING)) == (F_STORED | F_REMOTE)))
				continue;
			int graph = k >= nneigh;
			if ((int64_t)ra < spare && (!graph || (int)gra < s->graph_ra)) {
				int rc = uffd_copy_mode(s->uffd, ask[k], bufs + (uint64_t)k * PAGE, UFFDIO_COPY_MODE_DONTWAKE);
				if (rc == 0) {
					e->flags &= ~F_REMOTE;
					s->st.remote_pages--;
					s->recent[s->st.recent_n % RECENTN] = ask[k];   /* the clock sees it as used */
					s->st.recent_n++;
					ra++;
					gra += graph;
					continue;
				}
				if (rc != EAGAIN)
					continue;       /* present already, or its range went away */
			}
			cache_put(s, ask[k], bufs + (uint64_t)k * PAGE);
		}
	}
	s->st.readahead += ra;
	s->st.graph_readahead += gra;
	s->st.faults += done;
	s->st.zero_faults += zero;
	if (fetched_ok)                 /* every page that came over the wire, prefetched ones too */
		for (uint32_t k = 0; k < nask; k++)
			s->st.bytes_fetched += found[k] == 1 ? PAGE : 0;
	s->st.resident_est += (int64_t)(served + ra) * PAGE;
	s->st.installed += served + ra;
	if (why[0])
		setmsg(s->blocked, sizeof s->blocked, "%s (the program waits on its faults)", why);
	else if (fetched_ok && s->blocked[0])
		s->blocked[0] = 0;
	pthread_mutex_unlock(&s->mu);
	memcpy(fq->q, later, nlater * sizeof later[0]);
	memcpy(fq->qt, latert, nlater * sizeof latert[0]);
	memcpy(fq->own, laterown, nlater);
	fq->nq = nlater;
}

static int in_runs(uint64_t runs[][2], uint32_t n, uint64_t start, uint64_t end)
{
	for (uint32_t i = 0; i < n; i++)
		if (runs[i][0] <= start && end <= runs[i][0] + runs[i][1])
			return 1;
	return 0;
}

/* the program's own madvise(DONTNEED) or munmap of [start, end) */
static void on_remove(struct mtfs *s, uint64_t start, uint64_t end, int unmap)
{
	static __thread uint64_t gone[1 << 16];
	pthread_mutex_lock(&s->mu);
	if (!unmap) {
		/* our own drop: madvise reports one REMOVE per VMA, each inside a run in flight */
		if (in_runs(s->drops, s->ndrops, start, end)) {
			pthread_mutex_unlock(&s->mu);
			return;
		}
		if (s->resume) {
			if (!s->hello_done && s->npend < MAXPEND) {     /* who dropped it is known after HELLO */
				s->pend[s->npend][0] = start;
				s->pend[s->npend++][1] = end;
				pthread_mutex_unlock(&s->mu);
				return;
			}
			if (in_runs(s->foreign, s->nforeign, start, end)) {
				pthread_mutex_unlock(&s->mu);
				return;
			}
		}
	}
	s->st.removed_by_program += (end - start) / PAGE;
	uint32_t ngone = 0;
	int by_page = (end - start) / PAGE < s->m.n;
	uint64_t i = 0, p = start;
	for (;;) {
		struct ent *e;
		if (by_page) {
			if (p >= end)
				break;
			e = map_find(&s->m, p);
			p += PAGE;
		} else {
			if (i >= s->m.cap)
				break;
			e = &s->m.e[i];
			if (!e->page || e->page < start || e->page >= end) {
				i++;
				continue;
			}
		}
		if (!e)
			continue;
		if ((e->flags & (F_STORED | F_ZERO)) == F_STORED && ngone < sizeof gone / sizeof gone[0])
			gone[ngone++] = e->page;
		if (e->flags & F_REMOTE)
			s->st.remote_pages--;
		if (e->flags & F_STORED)
			s->st.stored_pages--;
		cache_forget(s, e, 0);
		e->flags &= ~(F_STORED | F_ZERO | F_REMOTE);
		if (e->flags & F_EVICTING) {
			e->flags |= F_INVALID;
			i++;
		} else if (!e->flags) {
			map_del(&s->m, e);      /* shifts a later entry into slot i: look at i again */
		} else {
			i++;
		}
	}
	int resume = s->resume;
	pthread_mutex_unlock(&s->mu);
	if (resume) {
		/* A pager that took over from a dead one asks the store for any page its table does
		 * not name (serve(), on_fork()), so the dead pager's copies of the removed pages must
		 * go, or the program would get them back instead of zeros: every key of the range,
		 * waiting for the store (bounded by the range; the program waits for this event) */
		for (uint64_t q = start; q < end && !s->stop;) {
			uint32_t k = 0;
			for (; q < end && k < sizeof gone / sizeof gone[0]; q += PAGE)
				gone[k++] = q;
			for (int delay_ms = 50; store_del(&s->loop_st, gone, k) && !s->stop;) {
				blocked_set(s, s->loop_st.err);
				usleep((useconds_t)delay_ms * 1000);
				delay_ms = delay_ms < 1000 ? delay_ms * 2 : 1000;
			}
		}
		return;
	}
	/* the store's stale copies; a failure leaves garbage in the store, never a wrong page
	 * (the table no longer names them) */
	if (store_del(&s->loop_st, gone, ngone)) {
		pthread_mutex_lock(&s->mu);
		setmsg(s->warning, sizeof s->warning, "%s (stale pages stay in the store)", s->loop_st.err);
		pthread_mutex_unlock(&s->mu);
	}
}

/* the program's mremap moved [old, old+len) to new: the table and the store's copies follow */
static void on_remap(struct mtfs *s, uint64_t old, uint64_t new, uint64_t len)
{
	uint64_t *from = malloc((len / PAGE + 1) * sizeof *from), *to = malloc((len / PAGE + 1) * sizeof *to);
	struct ent *tmp = malloc((len / PAGE + 1) * sizeof *tmp);
	if (!from || !to || !tmp) {
		free(from), free(to), free(tmp);
		blocked_set(s, "the pager is out of memory following an mremap");
		return;
	}
	uint32_t nm = 0, nt = 0;
	pthread_mutex_lock(&s->mu);
	for (uint64_t p = old; p < old + len; p += PAGE) {
		struct ent *e = map_find(&s->m, p);
		if (!e)
			continue;
		cache_forget(s, e, 0);
		if (e->flags & F_STORED) {
			tmp[nt] = *e;
			tmp[nt].page = p - old + new;
			tmp[nt++].flags &= F_STORED | F_ZERO | F_REMOTE;
			if (!(e->flags & F_ZERO)) {
				from[nm] = p;
				to[nm++] = p - old + new;
			}
		}
		if (e->flags & F_EVICTING) {
			e->flags = (e->flags & ~(F_STORED | F_ZERO | F_REMOTE)) | F_INVALID;
		} else {
			map_del(&s->m, e);
		}
	}
	for (uint32_t i = 0; i < nt; i++) {
		struct ent *e = map_get(&s->m, tmp[i].page);
		if (e) {
			e->hash = tmp[i].hash;
			e->flags = (e->flags & ~(F_STORED | F_ZERO | F_REMOTE)) | tmp[i].flags;
		}
	}
	s->st.remapped += nt;
	pthread_mutex_unlock(&s->mu);
	/* the moved pages' faults need their copies under the new keys: wait for the store */
	for (int delay_ms = 50; store_move(&s->loop_st, from, to, nm) && !s->stop;) {
		blocked_set(s, s->loop_st.err);
		usleep((useconds_t)delay_ms * 1000);
		delay_ms = delay_ms < 1000 ? delay_ms * 2 : 1000;
	}
	free(from), free(to), free(tmp);
}

static void on_wp(struct mtfs *s, uint64_t page)
{
	pthread_mutex_lock(&s->mu);
	s->st.wp_faults++;
	struct ent *e = map_find(&s->m, page);
	if (e && (e->flags & F_EVICTING)) {
		e->flags |= F_DEFERRED;         /* woken after the drop; it refaults as missing */
		pthread_mutex_unlock(&s->mu);
		return;
	}
	pthread_mutex_unlock(&s->mu);
	uffd_unprotect(s->uffd, page);
}

/* Is thread `tid` one of this process's (the pager's own read of the program faulted)?
 * tgkill with signal 0 sends nothing: it only says whether the thread is in our group. */
static int own_thread(uint32_t tid)
{
	return tid && syscall(SYS_tgkill, getpid(), (pid_t)tid, 0) == 0;
}

static void queue(struct mtfs *s, struct fq *fq, uint64_t page, double t, int own)
{
	for (uint32_t i = 0; i < fq->nq; i++)
		if (fq->q[i] == page) {
			fq->own[i] |= (uint8_t)own;
			return;
		}
	if (fq->nq < MAXQ) {
		fq->q[fq->nq] = page;
		fq->own[fq->nq] = (uint8_t)own;
		fq->qt[fq->nq++] = t;
		return;
	}
	/* more distinct pages waiting than the queue holds (each is a waiting thread):
	 * wake this one, it touches the page again and faults again later */
	uffd_wake(s->uffd, page, PAGE);
}

/* ---- the program's fork (UFFD_EVENT_FORK) ---- */

#define FORK_OPS 1024           /* the child's own events followed while it is restored */
#define FORK_CHUNK 256          /* pages a store round trip */

struct fork_op { uint64_t from, to, len; int kind; };   /* kind: 0 removed, 1 moved */

/* Read the child's own messages (nonblocking).  Its faults wait, and are woken when the
 * descriptor is closed; its madvise(DONTNEED)/munmap/mremap are recorded, so that no page
 * is put where the child has dropped or moved it.  Returns 0, or -1 when more of them
 * came than FORK_OPS (the restore then stops short: see on_fork). */
static int fork_drain(struct mtfs *s, int cfd, struct fork_op *ops, uint32_t *nops)
{
	struct uffd_msg msgs[64];
	for (int rounds = 0; rounds < 1024; rounds++) {
		ssize_t got = read(cfd, msgs, sizeof msgs);
		if (got <= 0)
			return 0;
		for (ssize_t i = 0; i < got / (ssize_t)sizeof msgs[0]; i++) {
			struct uffd_msg *m = &msgs[i];
			struct fork_op op = { 0 };
			if (m->event == UFFD_EVENT_REMOVE || m->event == UFFD_EVENT_UNMAP) {
				op = (struct fork_op){ m->arg.remove.start, 0, m->arg.remove.end - m->arg.remove.start, 0 };
			} else if (m->event == UFFD_EVENT_REMAP) {
				op = (struct fork_op){ m->arg.remap.from, m->arg.remap.to, m->arg.remap.len, 1 };
			} else if (m->event == UFFD_EVENT_FORK) {
				close((int)m->arg.fork.ufd);     /* a grandchild: see on_fork */
				continue;
			} else {
				continue;                         /* a fault: it waits */
			}
			pthread_mutex_lock(&s->mu);
			s->st.fork_events_child++;
			pthread_mutex_unlock(&s->mu);
			if (*nops >= FORK_OPS)
				return -1;
			ops[(*nops)++] = op;
		}
	}
	return 0;
}

/* Where page p of the fork is in the child now (0: the child removed it). */
static uint64_t fork_where(const struct fork_op *ops, uint32_t nops, uint64_t p)
{
	for (uint32_t i = 0; i < nops && p; i++) {
		if (p < ops[i].from || p >= ops[i].from + ops[i].len)
			continue;
		p = ops[i].kind ? p - ops[i].from + ops[i].to : 0;
	}
	return p;
}

/* The program forked: `cfd` is the child's userfaultfd (installed in this process by the
 * read).  The child's address space is the parent's at the fork, so the pages that were
 * in the store then are missing in the child too.  They are put into the child from the
 * store (every one: a fork child such as Redis's BGSAVE reads the whole heap), then the
 * descriptor is closed, which unregisters the child: it runs on as an ordinary process
 * with its whole heap resident (outside the budget, which is the parent's).
 *
 * Why the store's copies are the fork's content: a page remote at the fork cannot have
 * been evicted again since (it must be present in the parent for that, and only this
 * loop puts pages back, and it is here); so the store holds its content at the fork.
 * Faults of the parent read before this event wait until the restore is done.
 *
 * The pager's own fork (the heap graph's snapshot, mtfs_own_fork) gets nothing: its copy
 * is read by the graph thread, which patches the pages from the store itself.
 *
 * Known limits: a pager killed during a restore closes the child's descriptor with it,
 * and the child's pages not restored yet read as zeros; a pager that took over from a
 * dead one (resume) asks the store for every page of the registered ranges its table does
 * not name (the dead pager's copies; on_remove deletes those the program removed).  A grandchild forked
 * before its parent is restored has its descriptor closed (its missing pages read as
 * zeros); the counters say how often the child's own events came (fork_events_child). */
static void on_fork(struct mtfs *s, int cfd)
{
	pthread_mutex_lock(&s->mu);
	if (s->own_forks > 0) {
		s->own_forks--;
		s->st.forks_own++;
		pthread_mutex_unlock(&s->mu);
		close(cfd);
		return;
	}
	double t0 = now();
	uint64_t n = 0, cap = s->st.stored_pages + 64;
	uint64_t *pages = malloc(cap * sizeof *pages);
	uint8_t *zero = malloc(cap);
	if (pages && zero)
		for (uint64_t i = 0; i < s->m.cap && n < cap; i++) {
			struct ent *e = &s->m.e[i];
			if (e->page && (e->flags & (F_STORED | F_REMOTE)) == (F_STORED | F_REMOTE)) {
				zero[n] = (e->flags & F_ZERO) != 0;
				pages[n++] = e->page;
			}
		}
	/* resume: every page of the registered ranges that the table does not name as stored
	 * may be a copy the dead pager sent (asked for below, like serve() does) */
	if (s->resume && pages && zero)
		for (uint32_t r = 0; r < s->nranges; r++)
			for (uint64_t q = s->ranges[r][0]; q < s->ranges[r][1]; q += PAGE) {
				struct ent *e = map_find(&s->m, q);
				if (e && (e->flags & F_STORED))
					continue;
				if (n == cap) {
					uint64_t nc = cap * 2;
					uint64_t *np = realloc(pages, nc * sizeof *np);
					uint8_t *nz = np ? realloc(zero, nc) : NULL;
					if (np)
						pages = np;
					if (!nz) {
						free(pages), free(zero);
						pages = NULL, zero = NULL;
						r = s->nranges;
						break;
					}
					zero = nz, cap = nc;
				}
				zero[n] = 2;            /* unknown: the store may or may not hold it */
				pages[n++] = q;
			}
	pthread_mutex_unlock(&s->mu);
	static struct fork_op ops[FORK_OPS];
	uint32_t nops = 0;
	uint8_t *bufs = aligned_alloc(PAGE, FORK_CHUNK * PAGE);
	int8_t found[FORK_CHUNK];
	uint64_t ask[FORK_CHUNK], restored = 0;
	if (!pages || !zero || !bufs) {
		blocked_set(s, "the pager is out of memory restoring a fork child (its paged-out pages read as zeros)");
		goto out;
	}
	for (uint64_t off = 0; off < n && !s->stop; off += FORK_CHUNK) {
		uint32_t k = n - off < FORK_CHUNK ? (uint32_t)(n - off) : FORK_CHUNK, na = 0;
		for (uint32_t i = 0; i < k; i++)
			if (zero[off + i] != 1)         /* 0: stored, 2: maybe stored (resume) */
				ask[na++] = pages[off + i];
		/* the store must answer: a child given zeros instead would be wrong */
		int got = !na;
		for (int delay_ms = 50; !got && !s->stop;) {
			if (!(got = !store_get(&s->loop_st, ask, na, bufs, found))) {
				blocked_set(s, s->loop_st.err);
				usleep((useconds_t)delay_ms * 1000);
				delay_ms = delay_ms < 1000 ? delay_ms * 2 : 1000;
			}
		}
		if (!got)
			break;                  /* the pager stops: nothing unread goes into the child */
		uint32_t a = 0;
		for (uint32_t i = 0; i < k; i++) {
			const uint8_t *data = zero_page;
			if (zero[off + i] != 1) {
				uint32_t j = a++;
				if (found[j] == 0 && zero[off + i] == 2)
					continue;       /* resume: a page no pager sent */
				if (found[j] != 1) {
					pthread_mutex_lock(&s->mu);
					setmsg(s->warning, sizeof s->warning, "fork: store %s has no copy of page %#llx",
					       s->loop_st.url, (unsigned long long)ask[j]);
					pthread_mutex_unlock(&s->mu);
					continue;
				}
				data = bufs + (uint64_t)j * PAGE;
			}
			for (int tries = 0; tries < 10000; tries++) {
				if (fork_drain(s, cfd, ops, &nops)) {
					blocked_set(s, "a fork child changed its mappings too often while it was restored");
					goto out;
				}
				uint64_t dst = fork_where(ops, nops, pages[off + i]);
				if (!dst)
					break;
				int rc = uffd_copy(cfd, dst, data, 0);
				if (rc == EAGAIN) {      /* the child's own event is unread: read it, again */
					usleep(20);
					continue;
				}
				restored += rc == 0;     /* EEXIST: the child has it; ENOENT/EFAULT: unmapped */
				break;
			}
		}
	}
out:
	fork_drain(s, cfd, ops, &nops);
	close(cfd);                     /* unregisters the child; its waiting faults retry */
	free(pages), free(zero), free(bufs);
	pthread_mutex_lock(&s->mu);
	s->st.forks++;
	s->st.fork_pages_restored += restored;
	s->st.fork_seconds += now() - t0;
	pthread_mutex_unlock(&s->mu);
}

/* The registered ranges ({start, end} pairs; copied).  -1 when out of memory. */
int mtfs_set_ranges(struct mtfs *s, const uint64_t *ranges, uint32_t n)
{
	uint64_t (*r)[2] = malloc((n + 1) * sizeof *r);
	if (!r)
		return -1;
	memcpy(r, ranges, n * sizeof *r);
	pthread_mutex_lock(&s->mu);
	free(s->ranges);
	s->ranges = r, s->nranges = n;
	pthread_mutex_unlock(&s->mu);
	return 0;
}

/* The pager makes the program fork now (on = 1, every thread of the program stopped), or
 * that fork is over (on = 0; the caller waited for the loop to handle what it read). */
void mtfs_own_fork(struct mtfs *s, int on)
{
	pthread_mutex_lock(&s->mu);
	s->own_forks = on ? 1 : 0;
	pthread_mutex_unlock(&s->mu);
}

/* ---- the API Python calls ---- */

/* A serving state for the userfaultfd `uffd` (a descriptor of this process) and a
 * store: kind ST_FILE (dir) or ST_REDIS (host:port or unix_path, db, password),
 * keys "<ns>:<page in hex>".  kick_fd: an eventfd written when a fault waits for
 * room (the evictor wakes on it).  NULL when out of memory. */
struct mtfs *mtfs_create(int uffd, int kick_fd, int resume, int64_t local, int pf_neigh, uint32_t cache_pages,
			 int kind, const char *url, const char *ns, const char *dir, const char *host, int port,
			 int db, const char *pass, const char *unix_path)
{
	struct mtfs *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->uffd = uffd;
	s->kick_fd = kick_fd;
	s->resume = resume;
	s->hello_done = !resume;
	s->local = local;
	s->pf_neigh = pf_neigh;
	s->cache_pages = cache_pages;
	pthread_mutex_init(&s->mu, NULL);
	struct store *sts[3] = { &s->loop_st, &s->aux_st, &s->ev_st };
	s->pid = -1;
	s->pagemap_fd = s->helper_fd = -1;
	for (int i = 0; i < 3; i++) {
		struct store *st = sts[i];
		st->kind = kind;
		st->fd = -1;
		st->port = port;
		st->db = db;
		snprintf(st->url, sizeof st->url, "%s", url);
		snprintf(st->ns, sizeof st->ns, "%s", ns);
		snprintf(st->dir, sizeof st->dir, "%s", dir ? dir : "");
		snprintf(st->host, sizeof st->host, "%s", host ? host : "");
		snprintf(st->pass, sizeof st->pass, "%s", pass ? pass : "");
		snprintf(st->unix_path, sizeof st->unix_path, "%s", unix_path ? unix_path : "");
	}
	if (cache_pages) {
		s->cache = aligned_alloc(PAGE, (uint64_t)cache_pages * PAGE);
		s->cache_page = calloc(cache_pages, sizeof *s->cache_page);
	}
	if ((cache_pages && (!s->cache || !s->cache_page)) || map_grow(&s->m)) {
		free(s->cache), free(s->cache_page), free(s->m.e), free(s);
		return NULL;
	}
	return s;
}

void mtfs_destroy(struct mtfs *s)
{
	r_close(&s->loop_st);
	r_close(&s->aux_st);
	r_close(&s->ev_st);
	free(s->loop_st.wbuf), free(s->aux_st.wbuf), free(s->ev_st.wbuf), free(s->ev_buf);
	free(s->m.e), free(s->cache), free(s->cache_page);
	free(s->g_keys), free(s->g_ptr), free(s->g_adj), free(s->leaked), free(s->ranges);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

/* mtfs_run returns within 100 ms */
void mtfs_stop(struct mtfs *s) { s->stop = 1; }

uint64_t mtfs_cycle(struct mtfs *s) { return __atomic_load_n(&s->st.cycle, __ATOMIC_SEQ_CST); }

/* the fault loop: returns when s->stop is set, or -errno when the uffd fails */
int mtfs_run(struct mtfs *s)
{
	struct uffd_msg msgs[MAXMSG];
	struct pollfd pfd = { .fd = s->uffd, .events = POLLIN };
	prctl(PR_SET_NAME, "mtfm-serve");     /* visible in /proc: the tests find the compiled loop by it */
	while (!s->stop) {
		if (s->npend && s->hello_done) {
			uint32_t n = s->npend;
			uint64_t pend[MAXPEND][2];
			memcpy(pend, s->pend, n * sizeof pend[0]);
			s->npend = 0;
			for (uint32_t i = 0; i < n; i++)
				on_remove(s, pend[i][0], pend[i][1], 0);
		}
		__atomic_add_fetch(&s->st.cycle, 1, __ATOMIC_SEQ_CST);    /* all read so far is handled */
		int r = poll(&pfd, 1, s->lq.nq ? 2 : 100);
		if (r <= 0) {
			if (s->lq.nq)
				serve(s, &s->lq, &s->loop_st, 1, 0);
			continue;
		}
		__atomic_store_n(&s->busy, 1, __ATOMIC_SEQ_CST);
		ssize_t got = read(s->uffd, msgs, sizeof msgs);
		if (got < 0) {
			__atomic_store_n(&s->busy, 0, __ATOMIC_SEQ_CST);
			if (errno == EAGAIN || errno == EINTR)
				continue;
			return -errno;
		}
		double t0 = now();
		int events = 0;
		for (ssize_t i = 0; i < got / (ssize_t)sizeof msgs[0]; i++) {
			struct uffd_msg *m = &msgs[i];
			switch (m->event) {
			case UFFD_EVENT_PAGEFAULT: {
				uint64_t page = m->arg.pagefault.address & ~(PAGE - 1);
				if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)
					on_wp(s, page);
				else
					queue(s, &s->lq, page, t0,
					      s->own_tid && own_thread(m->arg.pagefault.feat.ptid));
				break;
			}
			case UFFD_EVENT_REMOVE:
			case UFFD_EVENT_UNMAP:
				events++;
				pthread_mutex_lock(&s->mu);
				if (m->event == UFFD_EVENT_UNMAP)
					s->st.events_unmap++;
				else
					s->st.events_remove++;
				pthread_mutex_unlock(&s->mu);
				if (s->lq.nq)      /* faults read before the event come first */
					serve(s, &s->lq, &s->loop_st, 0, 0);
				on_remove(s, m->arg.remove.start, m->arg.remove.end, m->event == UFFD_EVENT_UNMAP);
				break;
			case UFFD_EVENT_FORK:
				/* before the faults read with it: they cannot change what the
				 * child needs (see on_fork), and they wait meanwhile */
				events++;
				on_fork(s, (int)m->arg.fork.ufd);
				break;
			case UFFD_EVENT_REMAP:
				events++;
				pthread_mutex_lock(&s->mu);
				s->st.events_remap++;
				pthread_mutex_unlock(&s->mu);
				if (s->lq.nq)
					serve(s, &s->lq, &s->loop_st, 0, 0);
				on_remap(s, m->arg.remap.from, m->arg.remap.to, m->arg.remap.len);
				break;
			default:
				break;
			}
		}
		/* No prefetch after an event of the program's in this batch: its zap may still
		 * be on its way, and a page fetched for it now would be stale (faults are safe:
		 * the kernel refuses UFFDIO_COPY while an event is unread, EAGAIN). */
		if (s->lq.nq)
			serve(s, &s->lq, &s->loop_st, 1, !events);
		__atomic_store_n(&s->busy, 0, __ATOMIC_SEQ_CST);
	}
	return 0;
}

/* Wait until every message the loop has read so far is handled (a drop's madvise
 * returns once its REMOVE events are read, not handled). */
void mtfs_quiesce(struct mtfs *s)
{
	if (!__atomic_load_n(&s->busy, __ATOMIC_SEQ_CST))
		return;
	uint64_t c = mtfs_cycle(s);
	while (__atomic_load_n(&s->busy, __ATOMIC_SEQ_CST) && mtfs_cycle(s) == c && !s->stop)
		usleep(50);
}


/* Serve `pages` now, without the budget and without prefetch (detach), on a
 * store connection of its own; returns how many are still not served (EAGAIN
 * while the program maps or unmaps, or the store does not answer). */
int mtfs_serve_now(struct mtfs *s, const uint64_t *pages, uint32_t n)
{
	struct fq *fq = malloc(sizeof *fq);
	if (!fq)
		return (int)n;
	int left = 0;
	for (uint32_t off = 0; off < n; off += MAXQ / 2) {
		uint32_t k = n - off < MAXQ / 2 ? n - off : MAXQ / 2;
		double t = now();
		fq->nq = 0;
		for (uint32_t i = 0; i < k; i++) {
			fq->q[fq->nq] = pages[off + i];
			fq->own[fq->nq] = 0;
			fq->qt[fq->nq++] = t;
		}
		serve(s, fq, &s->aux_st, 0, 0);
		left += (int)fq->nq;
	}
	free(fq);
	return left;
}

/* the runs of the drop in flight (n = 0: none): their REMOVE events are the pager's */
MTFS_HIDDEN void mtfs_dropping(struct mtfs *s, const uint64_t *runs, uint32_t n)
{
	pthread_mutex_lock(&s->mu);
	s->ndrops = n < MAXDROP ? n : MAXDROP;
	memcpy(s->drops, runs, s->ndrops * sizeof s->drops[0]);
	pthread_mutex_unlock(&s->mu);
}

/* resume: the drop a killed pager had asked for (its REMOVE events are not the program's) */
void mtfs_hello(struct mtfs *s, const uint64_t *runs, uint32_t n)
{
	pthread_mutex_lock(&s->mu);
	s->nforeign = n < MAXDROP ? n : MAXDROP;
	memcpy(s->foreign, runs, s->nforeign * sizeof s->foreign[0]);
	s->hello_done = 1;
	pthread_mutex_unlock(&s->mu);
}

void mtfs_set_resident(struct mtfs *s, int64_t bytes, int add)
{
	pthread_mutex_lock(&s->mu);
	s->st.resident_est = add ? s->st.resident_est + bytes : bytes;
	pthread_mutex_unlock(&s->mu);
}

/* The resident heap measured (pagemap) by a scan that began when st.installed was
 * `installed_before`: pages installed since then are added, since the scan may have
 * missed them (an estimate set to the scan alone forgot them, and let faults in over
 * the budget).  A page counted twice or one the program dropped meanwhile makes the
 * estimate high, never low; the next scan corrects it. */
void mtfs_set_resident_scan(struct mtfs *s, int64_t bytes, uint64_t installed_before)
{
	pthread_mutex_lock(&s->mu);
	s->st.resident_est = bytes + (int64_t)(s->st.installed - installed_before) * (int64_t)PAGE;
	pthread_mutex_unlock(&s->mu);
}

uint64_t mtfs_installed(struct mtfs *s)
{
	pthread_mutex_lock(&s->mu);
	uint64_t n = s->st.installed;
	pthread_mutex_unlock(&s->mu);
	return n;
}

/* prefetched pages go into the program while there is room (1), or only to the cache (0) */
void mtfs_set_readahead(struct mtfs *s, int on)
{
	s->readahead = on;
}

/* of the prefetched pages of the graph's lists and hints, at most n a round trip go into the
 * program (readahead on; nearest first), the others only to the cache */
void mtfs_set_graph_readahead(struct mtfs *s, int n)
{
	pthread_mutex_lock(&s->mu);
	s->graph_ra = n < 0 ? 0 : n;
	pthread_mutex_unlock(&s->mu);
}

/* The pages the heap graph says hold only leaked objects (sorted ascending; copied): never
 * prefetched, neither into the program nor into the cache.  -1 when out of memory (the old
 * set stays). */
int mtfs_set_leaked(struct mtfs *s, const uint64_t *pages, uint64_t n)
{
	uint64_t *a = malloc((n + 1) * sizeof *a);
	if (!a)
		return -1;
	memcpy(a, pages, n * sizeof *a);
	pthread_mutex_lock(&s->mu);
	free(s->leaked);
	s->leaked = a, s->nleaked = n;
	pthread_mutex_unlock(&s->mu);
	return 0;
}

/* the userfaultfd's features (UFFD_FEATURE_THREAD_ID: the pager's own faults are known) */
void mtfs_set_features(struct mtfs *s, uint64_t features)
{
	s->own_tid = (features & UFFD_FEATURE_THREAD_ID) != 0;
}

/* pages whose copy the store holds (remote_only: and not served back since); returns
 * the count, writing at most `max` */
uint64_t mtfs_stored(struct mtfs *s, uint64_t *out, uint64_t max, int remote_only)
{
	uint64_t k = 0;
	pthread_mutex_lock(&s->mu);
	for (uint64_t i = 0; i < s->m.cap; i++) {
		struct ent *e = &s->m.e[i];
		if (!e->page || !(e->flags & F_STORED) || (remote_only && !(e->flags & F_REMOTE)))
			continue;
		if (k < max)
			out[k] = e->page;
		k++;
	}
	pthread_mutex_unlock(&s->mu);
	return k;
}

/* pages the graph says will be wanted soon: prefetched with the next fault's round trip */
void mtfs_hint(struct mtfs *s, const uint64_t *pages, uint32_t n)
{
	pthread_mutex_lock(&s->mu);
	for (uint32_t i = 0; i < n && s->nhints < HINTN; i++)
		s->hints[s->nhints++] = pages[i];
	pthread_mutex_unlock(&s->mu);
}

/* copies of the stats, the latencies, the recent faults and the messages, consistent */
void mtfs_read(struct mtfs *s, struct mtfs_stats *st, double *lat, uint64_t *recent, char *blocked, char *warning)
{
	pthread_mutex_lock(&s->mu);
	*st = s->st;
	if (lat)
		memcpy(lat, s->lat, sizeof s->lat);
	if (recent)
		memcpy(recent, s->recent, sizeof s->recent);
	memcpy(blocked, s->blocked, sizeof s->blocked);
	memcpy(warning, s->warning, sizeof s->warning);
	s->warning[0] = 0;
	pthread_mutex_unlock(&s->mu);
}


/* The heap graph's page edges: keys[0..n) sorted source pages, their successors
 * adj[ptr[i]..ptr[i+1]); copied.  depth: prefetch steps (0: none). */
int mtfs_set_graph(struct mtfs *s, const uint64_t *keys, const uint64_t *ptr, const uint64_t *adj, uint64_t n,
		   int depth)
{
	uint64_t m = n ? ptr[n] : 0;
	uint64_t *k = malloc((n + 1) * 8), *p = malloc((n + 1) * 8), *a = malloc((m + 1) * 8);
	if (!k || !p || !a) {
		free(k), free(p), free(a);
		return -1;
	}
	memcpy(k, keys, n * 8);
	memcpy(p, ptr, (n ? n + 1 : 0) * 8);
	memcpy(a, adj, m * 8);
	pthread_mutex_lock(&s->mu);
	free(s->g_keys), free(s->g_ptr), free(s->g_adj);
	s->g_keys = k, s->g_ptr = p, s->g_adj = a, s->g_n = n, s->g_depth = depth;
	pthread_mutex_unlock(&s->mu);
	return 0;
}
