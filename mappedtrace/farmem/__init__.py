"""Far memory: a program's heap partly in a page store, paged back on touch.

Layers (this package sits above :mod:`mappedtrace.target` and
:mod:`mappedtrace.heap` — and, for the guide only, the session's analysis —
and nothing below imports it):

* :mod:`._uffd` — the userfaultfd interface (pidfd_getfd, ioctls, messages);
* :mod:`.ranges` — which mappings of a running process are malloc's heap;
* :mod:`.stores` — page stores (``file:DIR``, ``redis://HOST:PORT``);
* :mod:`._serve` — the compiled fault-serving loop (``_serve.c``) and its page table;
* :mod:`.pager` — the evictor and its policy, status, detach;
* :mod:`.guide` — graph guidance: leaked pages first, prefetch along exact edges;
* :mod:`._runtime` — builds the C parts (``runtime/mtfarmem.c``, ``_serve.c``).
"""
