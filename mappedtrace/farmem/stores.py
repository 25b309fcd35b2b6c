"""Page stores: where evicted pages live.

A store maps a key (a string the pager makes from the process and the page
address) to the bytes of one page.  The interface is small on purpose —
``put_many``, ``get``, ``get_many``, ``delete``, ``health`` — so another back
end is a class of thirty lines.  ``open_store(url)`` knows two:

* ``file:DIR`` — one file per page under ``DIR`` (mode 0600).
* ``redis://HOST:PORT[/DB]`` — Redis through ``redis`` with ``hiredis``,
  pipelined batches.  A Redis Cluster spreads the same keys over hash slots
  (every page key is its own slot); see ``runtime/README.md``.
"""
from __future__ import annotations

import os
import time
from urllib.parse import urlparse

from ..errors import MappedTraceError


class StoreError(MappedTraceError):
    """The store did not answer or refused; the message says which store and why."""


class Store:
    """Interface of a page store (keys are str, values one page of bytes)."""

    url: str = ""

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        raise NotImplementedError

    def get(self, key: str) -> bytes | None:
        return self.get_many([key])[0]

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        raise NotImplementedError

    def delete(self, keys: list[str]) -> None:
        raise NotImplementedError

    def delete_prefix(self, prefix: str) -> int:
        """Remove every key that starts with ``prefix``; returns how many."""
        raise NotImplementedError

    def health(self) -> dict:
        """``{"ok": bool, "detail": str, "latency_us": float | None}``; never raises."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class FileStore(Store):
    """Pages as files under a directory (``file:DIR``)."""

    def __init__(self, directory: str):
        self.dir = os.path.abspath(directory)
        self.url = f"file:{self.dir}"
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise StoreError(f"store {self.url}: cannot create the directory: {e.strerror}") from None
        if not os.path.isdir(self.dir) or not os.access(self.dir, os.W_OK | os.X_OK):
            raise StoreError(f"store {self.url}: not a writable directory",
                             hint="give file:DIR with a directory this user can write")

    def _path(self, key: str) -> str:
        return os.path.join(self.dir, key.replace("/", "_"))

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        try:
            # overwritten in place, not renamed (a rename or a truncation makes ext4 flush the
            # data at once: 0.8 ms a page).  A pager killed mid-write leaves a torn file only for a
            # page that is still resident (pages are dropped after their put returns), and the next
            # pager sends every page it has not sent itself.
            for key, data in items:
                fd = os.open(self._path(key), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    os.pwrite(fd, data, 0)
                finally:
                    os.close(fd)
        except OSError as e:
            raise StoreError(f"store {self.url}: write failed: {e.strerror}") from None

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for key in keys:
            try:
                with open(self._path(key), "rb") as f:
                    out.append(f.read())
            except FileNotFoundError:
                out.append(None)
            except OSError as e:
                raise StoreError(f"store {self.url}: read failed: {e.strerror}") from None
        return out

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            try:
                os.unlink(self._path(key))
            except FileNotFoundError:
                pass
            except OSError as e:
                raise StoreError(f"store {self.url}: delete failed: {e.strerror}") from None

    def delete_prefix(self, prefix: str) -> int:
        n = 0
        p = prefix.replace("/", "_")
        with os.scandir(self.dir) as it:
            for e in it:
                if e.name.startswith(p):
                    try:
                        os.unlink(e.path)
                        n += 1
                    except FileNotFoundError:
                        pass
        return n

    def health(self) -> dict:
        t = time.perf_counter()
        ok = os.path.isdir(self.dir) and os.access(self.dir, os.W_OK)
        return {"ok": ok, "detail": "directory writable" if ok else "directory missing or not writable",
                "latency_us": (time.perf_counter() - t) * 1e6}


class RedisStore(Store):
    """Pages as Redis strings (``redis://HOST:PORT[/DB]``), pipelined."""

    def __init__(self, url: str, *, timeout: float = 5.0):
        try:
            import redis
        except ImportError:
            raise StoreError("the redis store needs the Python package 'redis' (with hiredis)",
                             hint="pip install 'redis[hiredis]'") from None
        self.url = url
        self._redis = redis
        try:
            self.r = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
            self.r.ping()
        except (redis.RedisError, ValueError, OSError) as e:
            raise StoreError(f"store {url} does not answer: {_one_line(e)}",
                             hint="start the Redis server, or check host and port") from None

    def _call(self, what: str, fn):
        try:
            return fn()
        except (self._redis.RedisError, OSError) as e:
            raise StoreError(f"store {self.url}: {what} failed: {_one_line(e)}") from None

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        def go():
            p = self.r.pipeline(transaction=False)
            for k, v in items:
                p.set(k, v)
            p.execute()
        if items:
            self._call("put", go)

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        return self._call("get", lambda: self.r.mget(keys))

    def delete(self, keys: list[str]) -> None:
        if keys:
            self._call("delete", lambda: self.r.delete(*keys))

    def delete_prefix(self, prefix: str) -> int:
        def go():
            n = 0
            batch = []
            for k in self.r.scan_iter(match=prefix + "*", count=1000):
                batch.append(k)
                if len(batch) >= 1000:
                    n += self.r.delete(*batch)
                    batch = []
            if batch:
                n += self.r.delete(*batch)
            return n
        return self._call("delete", go)

    def health(self) -> dict:
        t = time.perf_counter()
        try:
            self.r.ping()
            return {"ok": True, "detail": "PING answered", "latency_us": (time.perf_counter() - t) * 1e6}
        except (self._redis.RedisError, OSError) as e:
            return {"ok": False, "detail": _one_line(e), "latency_us": None}

    def close(self) -> None:
        self.r.close()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def open_store(url: str) -> Store:
    """The store named by ``url`` (``file:DIR`` or ``redis://HOST:PORT[/DB]``), checked to answer.

    :raises StoreError: an unknown scheme, or a store that does not answer
    """
    if url.startswith("file:"):
        d = url[len("file:"):]
        if d.startswith("//"):
            d = urlparse(url).path
        if not d:
            raise StoreError("store file: needs a directory, e.g. file:/var/tmp/pages")
        return FileStore(d)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url)
    raise StoreError(f"unknown store {url!r}", hint="use file:DIR or redis://HOST:PORT")
