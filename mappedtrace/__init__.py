"""MappedTrace: precise out-of-process pointer tracing with compiler-generated maps.

The Python API under the CLI::

    import mappedtrace
    with mappedtrace.attach(pid) as t:        # a live process, all threads stopped
        ...
    with mappedtrace.capture(pid) as t:       # a copy of it; the process paused only to take it
        ...
    snap = mappedtrace.open_snapshot(path)    # a core-file snapshot, same interface
"""
from __future__ import annotations

__version__ = "0.1.0"


def attach(pid: int):
    """Stop every thread of process ``pid`` with ptrace.

    :returns: a :class:`mappedtrace.target.live.LiveTarget`; ``close()`` (or
        leaving the ``with`` block) resumes the process exactly as before.
    """
    from .target.live import attach as _attach
    return _attach(pid)


def capture(pid: int, mode: str = "fork"):
    """Capture running process ``pid``: paused only for the capture (``"fork"``, a
    copy-on-write child, or ``"stop-copy"``), then it runs on while the copy is read.

    :returns: a :class:`mappedtrace.target.capture.CapturedTarget` (a context
        manager); ``meta["mode"]`` and ``meta["pause_ns"]`` say how and how long.
    """
    from .session import capture_live
    return capture_live(pid, mode)


def open_snapshot(path: str):
    """Open a snapshot (ELF core file) written by ``mappedtrace snapshot``.

    :returns: a :class:`mappedtrace.target.base.Target` over the file.
    """
    from .target.core import open_core
    return open_core(path)
