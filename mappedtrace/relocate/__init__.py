"""Move heap objects of a stopped process, rewriting every exact pointer to them (issue #17).

Layers: :mod:`.plan` decides from a heap graph what can move and what is
pinned (and why); :mod:`.inject` calls the program's own ``posix_memalign``
and ``free`` in a borrowed thread, in batches (a loop in a mapping of the
tracer's own, one stop-resume per batch); :mod:`.journal` records a pass so that a
relocator killed midway is finished or rolled back by the next run;
:mod:`.mover` runs a pass; :mod:`.compact` is a pass that empties sparse
heap pages for ``malloc_trim`` (``mappedtrace compact``).  Above the graph and
the target, never imported by them.

How a pass stays all-or-nothing under SIGKILL (:mod:`.mover`): the process is
put in group-stop (SIGSTOP) before anything is written, so a tracer that dies
leaves it stopped (the kernel re-enters group-stop for a tracee detached while
the group stop is in effect, ``__ptrace_unlink``); every write is listed in a
journal (mode 0600, linked into place complete) before it is made, with the
old and the new value; the next ``mappedtrace relocate PID`` (or ``--recover``)
rolls back (before the commit record) or finishes (after it), then sends
SIGCONT.
"""
