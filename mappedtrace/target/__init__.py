"""Targets: a live process (ptrace, LLDB) or a snapshot file, behind one interface.

See :mod:`mappedtrace.target.base`.  Layers above (unwind, roots, heap,
graph) use only :class:`~mappedtrace.target.base.Target`.
"""
from .base import Mapping, Target, ThreadState, GPR_NAMES, DWARF_REGS

__all__ = ["Mapping", "Target", "ThreadState", "GPR_NAMES", "DWARF_REGS"]
