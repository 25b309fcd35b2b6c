"""MappedTrace: precise out-of-process pointer tracing with compiler-generated maps.

The Python API under the CLI::

    import mappedtrace
    with mappedtrace.attach(pid) as t:        # a live process, all threads stopped
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


def open_snapshot(path: str):
    """Open a snapshot (ELF core file) written by ``mappedtrace snapshot``.

    :returns: a :class:`mappedtrace.target.base.Target` over the file.
    """
    from .target.core import open_core
    return open_core(path)
