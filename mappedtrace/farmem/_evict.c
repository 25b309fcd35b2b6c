/* The eviction batch of libmtfmserve.so (see _mtfs.h): the per-page work of
 * evicting, without the GIL.  Python keeps the policy (which pages: leaked,
 * then cold by the clock) and hands a sorted batch to mtfs_evict, which
 *
 *   1. keeps the pages pagemap says are present (a page gone since the scan
 *      would only be fetched back to be evicted again);
 *   2. marks them as being evicted in the page table (write faults on them
 *      wait, missing faults are served write-protected: see serve());
 *   3. write-protects them (UFFDIO_WRITEPROTECT, a run per ioctl) *before*
 *      reading, so no write slips in between the read and the drop;
 *   4. reads them with process_vm_readv (a vector per run);
 *   5. hashes each page (XXH3, 64 bits) and compares it with the hash of the
 *      store's copy: a clean page the store holds is not sent again; an
 *      all-zero page (checked byte for byte, not by hash) is not sent at all;
 *   6. sends the rest in one pipelined request (Redis: one MSET and one DEL;
 *      file: a pwrite per page);
 *   7. records the new copies, then asks the runtime helper in the program to
 *      drop the pages (madvise DONTNEED) over its socket, waits for the fault
 *      loop to have handled the REMOVE events the drop raised, and takes the
 *      dropped pages off the resident estimate at once, so faults waiting for
 *      room get it batch by batch, not round by round.
 *
 * Dirty tracking by hash: a page is sent again only when its content changed.
 * Known imprecision: XXH3 is not a cryptographic hash; two different contents
 * of one page with the same 64-bit hash (probability 2^-64 for data not made
 * to collide) would leave the older copy in the store.  The previous Python
 * evictor had the same bound (BLAKE2b cut to 8 bytes).
 */
#define _GNU_SOURCE
#define XXH_INLINE_ALL          /* header-only: nothing to link, nothing to load */
#include <xxhash.h>
#include "_mtfs.h"

#define IOVN 1024               /* vectors per process_vm_readv (IOV_MAX) */

/* what one batch did; the status adds these up */
struct mtfs_evict_res {
	uint64_t asked, evicted, sent, clean, zero, deleted, not_present, not_read, not_dropped, bytes_sent;
	double t_read, t_put, t_drop;   /* s spent: pagemap + protect + read + hash, the store, the drop */
	char err[320];          /* why the batch failed ("" when it did not) */
};

/* The target's pid, the pager's descriptor of /proc/PID/pagemap and of the helper's socket.
 * Returns -1 when out of memory. */
int mtfs_evict_setup(struct mtfs *s, int pid, int pagemap_fd, int helper_fd)
{
	if (!s->ev_buf && !(s->ev_buf = aligned_alloc(PAGE, EVB * PAGE)))
		return -1;
	s->pid = pid;
	s->pagemap_fd = pagemap_fd;
	s->helper_fd = helper_fd;
	return 0;
}

/* contiguous runs of sorted pages[0..n): runs[k] = {start, length} */
static uint32_t runs_of(const uint64_t *pages, uint32_t n, uint64_t (*runs)[2])
{
	uint32_t k = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (k && runs[k - 1][0] + runs[k - 1][1] == pages[i]) {
			runs[k - 1][1] += PAGE;
		} else {
			runs[k][0] = pages[i];
			runs[k++][1] = PAGE;
		}
	}
	return k;
}

static int is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;
	for (size_t i = 0; i < PAGE / 8; i++)
		if (w[i])
			return 0;
	return 1;
}

static int wp_range(int uffd, uint64_t start, uint64_t len, int protect)
{
	struct uffdio_writeprotect w = { .range = { start, len }, .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0 };
	return ioctl(uffd, UFFDIO_WRITEPROTECT, &w) < 0 ? errno : 0;
}

static int full_io(int fd, void *buf, size_t n, int writing)
{
	char *p = buf;
	while (n) {
		ssize_t r = writing ? send(fd, p, n, MSG_NOSIGNAL) : read(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? errno : EPIPE;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* the helper's wire format (runtime/mtfarmem.c): ranges as page numbers */
struct h_req { uint32_t op, n; };
struct h_reply { int32_t rc, err; uint64_t value, features, last_drop; };
#define H_DROP 2

/* Ask the helper to drop runs[0..n); 0, or an errno of the socket (err says why);
 * *madv_err gets the errno of a madvise the helper could not do. */
static int helper_drop(struct mtfs *s, uint64_t (*runs)[2], uint32_t n, int *madv_err, char *err, size_t errn)
{
	static __thread uint64_t msg[MAXDROP][2];
	for (uint32_t off = 0; off < n; off += MAXDROP) {
		uint32_t k = n - off < MAXDROP ? n - off : MAXDROP;
		struct h_req q = { H_DROP, k };
		for (uint32_t i = 0; i < k; i++) {
			msg[i][0] = runs[off + i][0] >> 12;
			msg[i][1] = runs[off + i][1] >> 12;
		}
		struct h_reply r;
		int e = full_io(s->helper_fd, &q, sizeof q, 1);
		if (!e)
			e = full_io(s->helper_fd, msg, k * sizeof msg[0], 1);
		if (!e)
			e = full_io(s->helper_fd, &r, sizeof r, 0);
		if (e) {
			setmsg(err, errn, e == EPIPE ? "the far-memory helper closed its socket (the program exited?)"
			       : "the far-memory helper: %s", strerror(e));
			return e;
		}
		if (r.rc)
			*madv_err = r.err;
	}
	return 0;
}

/* Evict pages[0..n) (sorted page addresses, n <= EVB).  Returns 0, or -1 when the
 * store failed (nothing dropped; ret->err says why), -2 when the helper did not
 * answer (ret->err), -3 when called before mtfs_evict_setup or with n > EVB. */
int mtfs_evict(struct mtfs *s, const uint64_t *pages_in, uint32_t n, struct mtfs_evict_res *ret)
{
	static __thread uint64_t pages[EVB], hash[EVB], oldhash[EVB];
	static __thread uint64_t runs[EVB][2], put[EVB], del[EVB];
	static __thread const uint8_t *putdata[EVB];
	static __thread uint8_t state[EVB];     /* 0 not read, 1 read */
	static __thread uint8_t has[EVB], oldzero[EVB], zero[EVB], ok[EVB];
	static __thread uint64_t pm[EVB];
	static __thread struct iovec lio[IOVN], rio[IOVN];
	memset(ret, 0, sizeof *ret);
	ret->asked = n;
	if (!s->ev_buf || n > EVB || s->helper_fd < 0 || s->pid <= 0)
		return -3;
	if (!n)
		return 0;
	double t0 = now();

	/* 1. present pages only (one pread of pagemap per run) */
	uint32_t nr = runs_of(pages_in, n, runs), np = 0;
	for (uint32_t r = 0; r < nr; r++) {
		uint64_t cnt = runs[r][1] / PAGE;
		ssize_t got = pread(s->pagemap_fd, pm, cnt * 8, (off_t)(runs[r][0] / PAGE * 8));
		for (uint64_t i = 0; i < cnt; i++)
			if (got == (ssize_t)(cnt * 8) && (pm[i] >> 63) & 1)
				pages[np++] = runs[r][0] + i * PAGE;
	}
	ret->not_present = n - np;
	n = np;
	if (!n)
		return 0;

	/* 2. being evicted, from here to evict_end */
	pthread_mutex_lock(&s->mu);
	for (uint32_t i = 0; i < n; i++) {
		struct ent *e = map_get(&s->m, pages[i]);
		state[i] = 0;
		has[i] = oldzero[i] = 0;
		if (!e) {                       /* out of memory: the page is not evicted */
			pages[i] = 0;
			continue;
		}
		e->flags = (e->flags & ~(F_INVALID | F_DEFERRED)) | F_EVICTING;
		has[i] = (e->flags & F_STORED) != 0;
		oldzero[i] = (e->flags & F_ZERO) != 0;
		oldhash[i] = e->hash;
	}
	pthread_mutex_unlock(&s->mu);

	/* 3. write-protect, 4. read; a run that cannot be protected is not read */
	uint32_t i0 = 0;
	while (i0 < n) {
		uint32_t nio = 0, base[IOVN];
		uint64_t want = 0;
		while (i0 < n && nio < IOVN) {
			if (!pages[i0]) {
				i0++;
				continue;
			}
			uint32_t j = i0 + 1;
			while (j < n && pages[j] == pages[j - 1] + PAGE)
				j++;
			uint64_t len = (uint64_t)(j - i0) * PAGE;
			if (wp_range(s->uffd, pages[i0], len, 1) == 0) {
				base[nio] = i0;
				lio[nio] = (struct iovec){ s->ev_buf + (uint64_t)i0 * PAGE, len };
				rio[nio++] = (struct iovec){ (void *)(uintptr_t)pages[i0], len };
				want += len;
			}
			i0 = j;
		}
		if (!nio)
			continue;
		/* process_vm_readv stops at the first page it cannot read: the pages before it
		 * are read; the one after it are tried again in the next call (bounded: every
		 * call either reads everything asked or gives up at least one page) */
		uint32_t v = 0;
		uint64_t voff = 0;
		while (v < nio) {
			struct iovec l2[IOVN], r2[IOVN];
			uint32_t k = 0;
			for (uint32_t x = v; x < nio; x++, k++) {
				uint64_t skip = x == v ? voff : 0;
				l2[k] = (struct iovec){ (char *)lio[x].iov_base + skip, lio[x].iov_len - skip };
				r2[k] = (struct iovec){ (char *)rio[x].iov_base + skip, rio[x].iov_len - skip };
			}
			ssize_t got = process_vm_readv(s->pid, l2, k, r2, k, 0);
			uint64_t good = got > 0 ? (uint64_t)got / PAGE * PAGE : 0;
			/* mark the pages read */
			while (good && v < nio) {
				uint64_t left = rio[v].iov_len - voff, take = good < left ? good : left;
				for (uint64_t o = 0; o < take; o += PAGE)
					state[base[v] + (voff + o) / PAGE] = 1;
				good -= take;
				voff += take;
				if (voff == rio[v].iov_len) {
					v++;
					voff = 0;
				}
			}
			if (v >= nio)
				break;
			if (got < 0 || (uint64_t)got < want) {
				/* the page at (v, voff) could not be read (unmapped meanwhile): skip it */
				voff += PAGE;
				if (voff >= rio[v].iov_len) {
					v++;
					voff = 0;
				}
			}
			want = 0;
			for (uint32_t x = v; x < nio; x++)
				want += rio[x].iov_len - (x == v ? voff : 0);
		}
	}

	/* 5. what to send */
	uint32_t nput = 0, ndel = 0, nread = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (!state[i])
			continue;
		nread++;
		const uint8_t *p = s->ev_buf + (uint64_t)i * PAGE;
		zero[i] = (uint8_t)is_zero(p);
		hash[i] = zero[i] ? 0 : XXH3_64bits(p, PAGE);
		if (zero[i]) {
			ret->zero++;
			if (has[i] && !oldzero[i])
				del[ndel++] = pages[i];
		} else if (has[i] && !oldzero[i] && oldhash[i] == hash[i]) {
			ret->clean++;
		} else {
			put[nput] = pages[i];
			putdata[nput++] = p;
		}
	}
	ret->not_read = n - nread;

	/* 6. send */
	double t1 = now();
	ret->t_read = t1 - t0;
	int rc = 0;
	if (store_put(&s->ev_st, put, nput, putdata, del, ndel)) {
		setmsg(ret->err, sizeof ret->err, "%s", s->ev_st.err);
		rc = -1;
	} else {
		ret->sent = nput;
		ret->deleted = ndel;
		ret->bytes_sent = nput * PAGE;
	}

	/* 7. commit what may be dropped: read, sent, and not removed by the program meanwhile */
	double t2 = now();
	ret->t_put = t2 - t1;
	uint32_t nk = 0;
	pthread_mutex_lock(&s->mu);
	for (uint32_t i = 0; i < n; i++) {
		ok[i] = 0;
		if (!pages[i] || !state[i] || rc)
			continue;
		struct ent *e = map_find(&s->m, pages[i]);
		if (!e || (e->flags & (F_EVICTING | F_INVALID)) != F_EVICTING) {
			ret->not_dropped++;
			continue;
		}
		cache_forget(s, e, 0);
		if (!(e->flags & F_STORED))
			s->st.stored_pages++;
		if (!(e->flags & F_REMOTE))
			s->st.remote_pages++;
		e->hash = hash[i];
		e->flags = (e->flags & ~F_ZERO) | F_STORED | F_REMOTE | F_COMMITTED | (zero[i] ? F_ZERO : 0);
		ok[i] = 1;
		put[nk++] = pages[i];           /* (put[] is free again: the kept pages, in order) */
	}
	pthread_mutex_unlock(&s->mu);
	/* pages read but not kept (the store failed, the program removed them) are writable again */
	for (uint32_t i = 0; i < n; i++)
		if (pages[i] && state[i] && !ok[i])
			wp_range(s->uffd, pages[i], PAGE, 0);

	int dropped_all = 0;
	if (nk) {
		uint32_t nkr = runs_of(put, nk, runs);
		mtfs_dropping(s, &runs[0][0], nkr);
		int madv_err = 0;
		int e = helper_drop(s, runs, nkr, &madv_err, ret->err, sizeof ret->err);
		if (!e) {
			/* the helper's madvise returned once the fault loop had *read* its REMOVE
			 * events, not handled them: wait for the loop to finish the read it was in,
			 * so it still finds these runs among the drops in flight */
			mtfs_quiesce(s);
			dropped_all = 1;
			if (madv_err) {
				pthread_mutex_lock(&s->mu);
				setmsg(s->warning, sizeof s->warning, "the helper could not drop pages: %s",
				       strerror(madv_err));
				pthread_mutex_unlock(&s->mu);
			}
		} else {
			rc = -2;
		}
		mtfs_dropping(s, NULL, 0);
	}

	/* 8. the end: room for the faults at once, held write faults released */
	uint32_t nw = 0;
	pthread_mutex_lock(&s->mu);
	if (dropped_all) {
		s->st.resident_est -= (int64_t)nk * (int64_t)PAGE;
		ret->evicted = nk;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (!pages[i])
			continue;
		struct ent *e = map_find(&s->m, pages[i]);
		if (!e)
			continue;
		if (e->flags & F_DEFERRED)
			del[nw++] = pages[i];           /* (del[] is free again: the writers to wake) */
		if (!(ok[i] && dropped_all) && (e->flags & F_REMOTE)) {
			e->flags &= ~F_REMOTE;
			s->st.remote_pages--;
		}
		e->flags &= ~(F_EVICTING | F_INVALID | F_DEFERRED | F_COMMITTED);
		put_or_drop(s, e);
	}
	pthread_mutex_unlock(&s->mu);
	for (uint32_t i = 0; i < nw; i++) {
		uffd_unprotect(s->uffd, del[i]);        /* a no-op when dropped; then wakes the writer */
		uffd_wake(s->uffd, del[i], PAGE);
	}
	ret->t_drop = now() - t2;
	return rc;
}
