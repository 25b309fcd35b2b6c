/* The store clients of libmtfmserve.so (see _mtfs.h): a file per page under a
 * directory (pread/pwrite), or Redis spoken in RESP over one socket per user
 * (the fault loop, detach, the evictor each have their own connection), with
 * requests pipelined: MGET for a round of faults, one SET per page and DEL for
 * an eviction batch, written in one send and answered in order.
 */
#define _GNU_SOURCE
#include "_mtfs.h"

/* ---- stores ---- */

MTFS_HIDDEN void key_of(const struct store *st, uint64_t page, char *out, size_t n)
{
	snprintf(out, n, "%s:%llx", st->ns, (unsigned long long)page);
}

MTFS_HIDDEN void path_of(const struct store *st, uint64_t page, char *out, size_t n)
{
	char key[160];
	key_of(st, page, key, sizeof key);
	for (char *p = key; *p; p++)
		if (*p == '/')
			*p = '_';
	snprintf(out, n, "%s/%s", st->dir, key);
}

MTFS_HIDDEN void r_close(struct store *st)
{
	if (st->fd >= 0)
		close(st->fd);
	st->fd = -1;
	st->rpos = st->rlen = 0;
}

static int r_fail(struct store *st, const char *what, int err)
{
	if (err == EAGAIN || err == EWOULDBLOCK)
		setmsg(st->err, sizeof st->err, "store %s: no answer to %s within 2 s", st->url, what);
	else
		setmsg(st->err, sizeof st->err, "store %s: %s failed: %s", st->url, what,
		       err ? strerror(err) : "connection closed");
	r_close(st);
	return -1;
}

static int w_add(struct store *st, const void *p, size_t n)
{
	if (st->wlen + n > st->wcap) {
		size_t cap = st->wcap ? st->wcap : 1 << 16;
		while (cap < st->wlen + n)
			cap *= 2;
		char *b = realloc(st->wbuf, cap);
		if (!b)
			return -1;
		st->wbuf = b;
		st->wcap = cap;
	}
	memcpy(st->wbuf + st->wlen, p, n);
	st->wlen += n;
	return 0;
}

/* append one RESP command of `argc` arguments */
MTFS_HIDDEN int w_cmd(struct store *st, int argc, const char **argv, const size_t *lens)
{
	char h[32];
	int k = snprintf(h, sizeof h, "*%d\r\n", argc);
	if (w_add(st, h, (size_t)k))
		return -1;
	for (int i = 0; i < argc; i++) {
		k = snprintf(h, sizeof h, "$%zu\r\n", lens[i]);
		if (w_add(st, h, (size_t)k) || w_add(st, argv[i], lens[i]) || w_add(st, "\r\n", 2))
			return -1;
	}
	return 0;
}

MTFS_HIDDEN int w_flush(struct store *st, const char *what)
{
	size_t off = 0;
	while (off < st->wlen) {
		ssize_t n = send(st->fd, st->wbuf + off, st->wlen - off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			st->wlen = 0;
			return r_fail(st, what, n < 0 ? errno : 0);
		}
		off += (size_t)n;
	}
	st->wlen = 0;
	return 0;
}

static int r_fill(struct store *st, const char *what)
{
	if (st->rpos == st->rlen)
		st->rpos = st->rlen = 0;
	else if (st->rlen == sizeof st->rb) {
		memmove(st->rb, st->rb + st->rpos, st->rlen - st->rpos);
		st->rlen -= st->rpos;
		st->rpos = 0;
	}
	for (;;) {
		ssize_t n = recv(st->fd, st->rb + st->rlen, sizeof st->rb - st->rlen, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return r_fail(st, what, n < 0 ? errno : 0);
		st->rlen += (size_t)n;
		return 0;
	}
}

/* one reply line without its CRLF, into out */
static int r_line(struct store *st, char *out, size_t max, const char *what)
{
	for (;;) {
		char *b = st->rb + st->rpos, *nl = memmem(b, st->rlen - st->rpos, "\r\n", 2);
		if (nl) {
			size_t n = (size_t)(nl - b);
			if (n >= max) {
				setmsg(st->err, sizeof st->err, "store %s: a reply line of %zu bytes to %s", st->url, n, what);
				r_close(st);
				return -1;
			}
			memcpy(out, b, n);
			out[n] = 0;
			st->rpos += n + 2;
			return 0;
		}
		if (r_fill(st, what))
			return -1;
	}
}

static int r_bytes(struct store *st, void *dst, size_t n, const char *what)
{
	while (n) {
		if (st->rpos == st->rlen && r_fill(st, what))
			return -1;
		size_t k = st->rlen - st->rpos < n ? st->rlen - st->rpos : n;
		if (dst) {
			memcpy(dst, st->rb + st->rpos, k);
			dst = (char *)dst + k;
		}
		st->rpos += k;
		n -= k;
	}
	return 0;
}

/* a reply that is not an error; `ret` gets an integer reply's value */
MTFS_HIDDEN int r_simple(struct store *st, const char *what, long long *ret)
{
	char line[512];
	if (r_line(st, line, sizeof line, what))
		return -1;
	if (line[0] == '-') {
		setmsg(st->err, sizeof st->err, "store %s: %s refused: %s", st->url, what, line + 1);
		return -2;
	}
	if (ret)
		*ret = line[0] == ':' ? atoll(line + 1) : 0;
	return 0;
}

MTFS_HIDDEN int r_connect(struct store *st)
{
	if (st->fd >= 0)
		return 0;
	int fd = -1;
	if (st->unix_path[0]) {
		struct sockaddr_un a = { .sun_family = AF_UNIX };
		memcpy(a.sun_path, st->unix_path, sizeof a.sun_path - 1);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) {
			int e = errno;
			if (fd >= 0)
				close(fd);
			return r_fail(st, "connect", e);
		}
	} else {
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
		char port[16];
		snprintf(port, sizeof port, "%d", st->port);
		int rc = getaddrinfo(st->host, port, &hints, &res);
		if (rc) {
			setmsg(st->err, sizeof st->err, "store %s: %s", st->url, gai_strerror(rc));
			return -1;
		}
		int e = 0;
		for (struct addrinfo *a = res; a; a = a->ai_next) {
			fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
			if (fd < 0)
				continue;
			struct timeval tv = { 2, 0 };
			setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
			if (!connect(fd, a->ai_addr, a->ai_addrlen))
				break;
			e = errno;
			close(fd);
			fd = -1;
		}
		freeaddrinfo(res);
		if (fd < 0)
			return r_fail(st, "connect", e);
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	/* a store that stops answering (stopped, partitioned) must not hang the loop:
	 * it waits 2 s, reports, reconnects and asks again */
	struct timeval tv = { 2, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	st->fd = fd;
	st->rpos = st->rlen = 0;
	char dbs[16];
	int n = 0;
	if (st->pass[0]) {
		const char *av[] = { "AUTH", st->pass };
		size_t ln[] = { 4, strlen(st->pass) };
		w_cmd(st, 2, av, ln);
		n++;
	}
	if (st->db) {
		snprintf(dbs, sizeof dbs, "%d", st->db);
		const char *av[] = { "SELECT", dbs };
		size_t ln[] = { 6, strlen(dbs) };
		w_cmd(st, 2, av, ln);
		n++;
	}
	if (n && w_flush(st, "AUTH/SELECT"))
		return -1;
	for (int i = 0; i < n; i++) {
		int rc = r_simple(st, "AUTH/SELECT", NULL);
		if (rc) {
			r_close(st);
			return -1;
		}
	}
	return 0;
}

/* fetch pages: found[i] = 1 (bufs[i] filled), 0 (no copy), -1 (copy of a wrong size) */
MTFS_HIDDEN int store_get(struct store *st, const uint64_t *pages, uint32_t n, uint8_t *bufs, int8_t *found)
{
	if (!n)
		return 0;
	if (st->kind == ST_FILE) {
		for (uint32_t i = 0; i < n; i++) {
			char path[4400];
			path_of(st, pages[i], path, sizeof path);
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				if (errno == ENOENT) {
					found[i] = 0;
					continue;
				}
				setmsg(st->err, sizeof st->err, "store %s: read failed: %s", st->url, strerror(errno));
				return -1;
			}
			ssize_t k = pread(fd, bufs + (uint64_t)i * PAGE, PAGE, 0);
			int e = errno;
			close(fd);
			if (k < 0) {
				setmsg(st->err, sizeof st->err, "store %s: read failed: %s", st->url, strerror(e));
				return -1;
			}
			found[i] = k == (ssize_t)PAGE ? 1 : -1;
		}
		return 0;
	}
	if (r_connect(st))
		return -1;
	/* MGET key...: keys formatted into one buffer */
	const char *av[MAXQ + MAXPF + 1];
	size_t ln[MAXQ + MAXPF + 1];
	static __thread char keys[MAXQ + MAXPF][160];
	av[0] = "MGET";
	ln[0] = 4;
	for (uint32_t i = 0; i < n; i++) {
		key_of(st, pages[i], keys[i], sizeof keys[i]);
		av[i + 1] = keys[i];
		ln[i + 1] = strlen(keys[i]);
	}
	if (w_cmd(st, (int)n + 1, av, ln) || w_flush(st, "get"))
		return -1;
	char line[64];
	if (r_line(st, line, sizeof line, "get"))
		return -1;
	if (line[0] != '*' || atoll(line + 1) != (long long)n) {
		setmsg(st->err, sizeof st->err, "store %s: get: unexpected reply %.40s", st->url, line);
		r_close(st);
		return -1;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (r_line(st, line, sizeof line, "get"))
			return -1;
		long long len = line[0] == '$' ? atoll(line + 1) : -2;
		if (len == -1) {
			found[i] = 0;
			continue;
		}
		if (len < 0) {
			setmsg(st->err, sizeof st->err, "store %s: get: unexpected reply %.40s", st->url, line);
			r_close(st);
			return -1;
		}
		if (len == (long long)PAGE) {
			if (r_bytes(st, bufs + (uint64_t)i * PAGE, PAGE, "get"))
				return -1;
			found[i] = 1;
		} else {
			if (r_bytes(st, NULL, (size_t)len, "get"))
				return -1;
			found[i] = -1;
		}
		if (r_bytes(st, NULL, 2, "get"))
			return -1;
	}
	return 0;
}

MTFS_HIDDEN int store_del(struct store *st, const uint64_t *pages, uint32_t n)
{
	if (!n)
		return 0;
	if (st->kind == ST_FILE) {
		for (uint32_t i = 0; i < n; i++) {
			char path[4400];
			path_of(st, pages[i], path, sizeof path);
			if (unlink(path) && errno != ENOENT) {
				setmsg(st->err, sizeof st->err, "store %s: delete failed: %s", st->url, strerror(errno));
				return -1;
			}
		}
		return 0;
	}
	if (r_connect(st))
		return -1;
	for (uint32_t i = 0; i < n; i++) {
		char key[160];
		key_of(st, pages[i], key, sizeof key);
		const char *av[] = { "DEL", key };
		size_t ln[] = { 3, strlen(key) };
		if (w_cmd(st, 2, av, ln))
			return -1;
	}
	if (w_flush(st, "delete"))
		return -1;
	for (uint32_t i = 0; i < n; i++)
		if (r_simple(st, "delete", NULL))
			return -1;
	return 0;
}

/* move the store's copy of each page from[i] to to[i] */
MTFS_HIDDEN int store_move(struct store *st, const uint64_t *from, const uint64_t *to, uint32_t n)
{
	if (st->kind == ST_FILE) {
		for (uint32_t i = 0; i < n; i++) {
			char a[4400], b[4400];
			path_of(st, from[i], a, sizeof a);
			path_of(st, to[i], b, sizeof b);
			if (rename(a, b) && errno != ENOENT) {
				setmsg(st->err, sizeof st->err, "store %s: rename failed: %s", st->url, strerror(errno));
				return -1;
			}
		}
		return 0;
	}
	if (r_connect(st))
		return -1;
	for (uint32_t i = 0; i < n; i++) {
		char a[160], b[160];
		key_of(st, from[i], a, sizeof a);
		key_of(st, to[i], b, sizeof b);
		const char *av[] = { "RENAME", a, b };
		size_t ln[] = { 6, strlen(a), strlen(b) };
		if (w_cmd(st, 3, av, ln))
			return -1;
	}
	if (w_flush(st, "rename"))
		return -1;
	for (uint32_t i = 0; i < n; i++) {
		int rc = r_simple(st, "rename", NULL);
		if (rc == -1)
			return -1;      /* -2: "no such key" is a page never sent (zero): fine */
	}
	return 0;
}


/* Store pages[i] = data[i] (one page each) and remove the copies of del[0..ndel): one
 * pipelined request, answered before it returns (a page is dropped only after the
 * store acknowledged its copy).  0, or -1 with st->err set. */
MTFS_HIDDEN int store_put(struct store *st, const uint64_t *pages, uint32_t n, const uint8_t *const *data,
			  const uint64_t *del, uint32_t ndel)
{
	if (!n && !ndel)
		return 0;
	if (st->kind == ST_FILE) {
		/* overwritten in place, not renamed: a rename or a truncation makes ext4 flush the
		 * data at once (0.8 ms a page).  A pager killed mid-write leaves a torn file only
		 * for a page that is still resident (pages are dropped after this returns), and
		 * the next pager sends every page it has not sent itself. */
		for (uint32_t i = 0; i < n; i++) {
			char path[4400];
			path_of(st, pages[i], path, sizeof path);
			int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
			if (fd < 0) {
				setmsg(st->err, sizeof st->err, "store %s: write failed: %s", st->url, strerror(errno));
				return -1;
			}
			ssize_t k = pwrite(fd, data[i], PAGE, 0);
			int e = errno;
			close(fd);
			if (k != (ssize_t)PAGE) {
				setmsg(st->err, sizeof st->err, "store %s: write failed: %s", st->url,
				       k < 0 ? strerror(e) : "short write");
				return -1;
			}
		}
		return store_del(st, del, ndel);
	}
	if (r_connect(st))
		return -1;
	/* MSET k1 v1 k2 v2 ... and DEL k...: two commands, two replies */
	uint32_t m = n > ndel ? n : ndel;
	const char **av = malloc((2 * (size_t)m + 1) * sizeof *av);
	size_t *ln = malloc((2 * (size_t)m + 1) * sizeof *ln);
	char (*keys)[160] = malloc(((size_t)m + 1) * sizeof *keys);
	int rc = -1, ncmd = 0;
	if (!av || !ln || !keys) {
		setmsg(st->err, sizeof st->err, "store %s: put: out of memory", st->url);
		goto out;
	}
	if (n) {
		av[0] = "MSET";
		ln[0] = 4;
		for (uint32_t i = 0; i < n; i++) {
			key_of(st, pages[i], keys[i], sizeof keys[i]);
			av[1 + 2 * i] = keys[i];
			ln[1 + 2 * i] = strlen(keys[i]);
			av[2 + 2 * i] = (const char *)data[i];
			ln[2 + 2 * i] = PAGE;
		}
		if (w_cmd(st, 1 + 2 * (int)n, av, ln))
			goto oom;
		ncmd++;
	}
	if (ndel) {
		av[0] = "DEL";
		ln[0] = 3;
		for (uint32_t i = 0; i < ndel; i++) {
			key_of(st, del[i], keys[i], sizeof keys[i]);
			av[1 + i] = keys[i];
			ln[1 + i] = strlen(keys[i]);
		}
		if (w_cmd(st, 1 + (int)ndel, av, ln))
			goto oom;
		ncmd++;
	}
	if (w_flush(st, "put"))
		goto out;
	rc = 0;
	for (int i = 0; i < ncmd; i++) {
		int r = r_simple(st, "put", NULL);
		if (r) {
			if (r == -2)
				r_close(st);    /* replies may still be on their way: start clean */
			rc = -1;
			break;
		}
	}
	goto out;
oom:
	st->wlen = 0;
	setmsg(st->err, sizeof st->err, "store %s: put: out of memory", st->url);
out:
	free(av), free(ln), free(keys);
	return rc;
}
