"""Error types of MappedTrace, typed by cause.

Every error carries a one-line message and an optional hint; the CLI prints
``error: <message>`` and ``hint: <hint>`` and exits non-zero instead of showing
a traceback (``--debug`` shows it).  Analyses catch :class:`TargetFault`
locally (one unreadable page does not spoil a whole report) and abort on
:class:`BadData` only where going on would make the answer wrong.
"""
from __future__ import annotations


class MappedTraceError(Exception):
    """Base class.  ``exit_code`` is what the CLI exits with."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class BadData(MappedTraceError):
    """Malformed input: a map section, a snapshot file, a heap structure.

    ``where`` names the file and section (``prog: .mtmap``), ``offset`` the
    byte offset inside it, so the message reads like drgn's
    ``prog: .mtmap+0x1a4: type count 4000000 exceeds section size``.
    """

    def __init__(self, where: str, offset: int | None, message: str,
                 hint: str | None = None):
        loc = where if offset is None else f"{where}+{offset:#x}"
        super().__init__(f"{loc}: {message}", hint)
        self.where = where
        self.offset = offset
        self.detail = message


class UnsupportedVersion(BadData):
    """A known format in a version this build does not read."""


class TargetFault(MappedTraceError):
    """Target memory could not be read at ``address`` (unmapped, or a race)."""

    def __init__(self, address: int, size: int, message: str | None = None):
        super().__init__(message or f"cannot read {size} bytes at {address:#x} in the target")
        self.address = address
        self.size = size


class NoSuchProcess(MappedTraceError):
    """The PID does not exist, is a zombie, or exited while we worked."""


class PermissionProblem(MappedTraceError):
    """The kernel refused (ptrace scope, missing CAP_SYS_PTRACE, file mode)."""


class ToolchainError(MappedTraceError):
    """A compiler, linker or the pass plugin is missing or failed."""


class NotBuiltYet(MappedTraceError):
    """A command of the design that this version does not have yet."""
