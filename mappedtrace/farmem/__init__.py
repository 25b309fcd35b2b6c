"""Far memory: a program's heap partly in a page store, paged back on touch.

Layers (this package sits above :mod:`mappedtrace.target` and
:mod:`mappedtrace.heap`, and nothing below imports it):

* :mod:`._uffd` — the userfaultfd interface (pidfd_getfd, ioctls, messages);
* :mod:`.ranges` — which mappings of a running process are malloc's heap;
* :mod:`.stores` — page stores (``file:DIR``, ``redis://HOST:PORT``);
* :mod:`.pager` — the fault thread, the evictor, status, detach;
* :mod:`._runtime` — builds the in-process helper ``runtime/mtfarmem.c``.
"""
