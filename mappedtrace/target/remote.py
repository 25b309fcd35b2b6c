"""A process on another machine, through a gdb-remote debug server.

On the target's machine: ``lldb-server-22 gdbserver HOST:PORT`` (Debian's
lldb-22) or ``gdbserver --multi HOST:PORT`` (Debian's gdbserver), a server
with no process: the tracer connects (:class:`RemoteTarget`), reads
``/proc/PID/maps`` through it, lets its caller decode the binaries' maps,
then has it attach (``vAttach``), which stops every thread; it reads what the
analysis uses and detaches (``D``): the process runs on and the server exits.
A server attached already (``--attach PID``) is used as it is.  No agent of
ours runs there.

What each server gives (measured with lldb-server 22 and gdbserver 13.1):

* registers from ``g`` after ``Hg``, laid out by ``target.xml``: both.
  lldb-server has no ``orig_rax``: it is read from
  ``/proc/PID/task/TID/syscall`` through ``vFile:`` (-1 where unreadable).
  The FXSAVE image (``NT_PRFPREG``) is taken from the same reply; the XSAVE
  area (AVX upper halves) is not built.
* memory: lldb-server answers binary ``x`` reads of 128 KiB; gdbserver 13
  only hex ``m`` of about 9 KiB (twice the bytes on the wire, and many more
  requests: pipelining hides the round trips).
* mappings: ``/proc/PID/maps`` through ``vFile:`` (both), and the binaries
  themselves through ``vFile:`` (see :mod:`.binaries`).  ``qMemoryRegionInfo``
  (lldb-server only) is not needed.
* auxv: ``qXfer:auxv:read`` (both).

Memory is read on demand: small reads through a cache of 64 KiB blocks clipped
to their mapping, large reads (the heap's segments) straight into the caller's
buffer, in pipelined packets.  ``meta`` counts bytes moved and round trips.

The pause: from our ``vAttach`` to our ``D`` when we attach
(``meta["attached_here"]``); a server attached already stopped the process
before we connected, and ``meta["pause_ns"]`` is then only from our connect to
our detach.  In stop-copy it is the copy: the process is stopped while its
memory crosses the link.  Through gdbserver a copy-on-write fork is made on
the far side instead (``capture_remote(mode="fork")``: :mod:`.remote_fork`),
and the pause ends at the parent's detach, before the copy.  lldb-server 22
cannot give a sound fork through the protocol (checked, see
``benchmarks/remote/RESULTS.md``): it grants no ``multiprocess``/``fork-events``
when asked in ``qSupported``, so the child of an injected ``clone`` would be
detached by the server and run the program's code unwatched, and the child
could be read only through ``vFile:pread`` of ``/proc/CHILD/mem``, whose
offsets it cuts at 4 GiB (``F-1,5``, EIO, at every address of a PIE
program).  gdbserver 13 grants ``fork-events`` and ``multiprocess``: the local
fork's armed-frame injection is driven through it (:mod:`.remote_fork`).
Neither server answers ``QEnableCompression`` (empty reply).

Letting the process run and stopping it again (:meth:`RemoteTarget.run_for`:
``vCont;c``, a moment, the ``\x03`` interrupt) is done with lldb-server only:
gdbserver's interrupt sends ``SIGINT`` to the target's process group (it fails
when the target leads none, and would reach the group's other processes).
:func:`capture_remote` uses it to stop again a process caught with an arena
lock held; signals that arrive while it runs go back to their threads with
``vCont;C``.  Settling by single steps through the server (both servers):
:func:`mappedtrace.target.settle.settle_remote`.
"""
from __future__ import annotations

import time

from .base import GPR_NAMES, Target
from .binaries import BinaryFinder, localize
from .gdbremote import GdbRemote, RemoteError, parse_stop
from .live import ThreadSnapshot, parse_maps
from .lldb_backend import _FX_HEAD      # the FXSAVE header layout, declared once there
from ..errors import TargetFault

#: server register names that differ from ``user_regs_struct``'s
_ALIASES = {"rflags": "eflags"}
_NO_SYSCALL = (1 << 64) - 1
#: cache block for small reads
BLOCK = 64 << 10
#: reads at least this big bypass the cache
DIRECT = 256 << 10
#: bound on threads read
MAX_THREADS = 1 << 14
#: bound on signal stops met while the process is let run (:meth:`RemoteTarget.run_for`)
MAX_SIGNAL_STOPS = 64
_AT_ENTRY = 9
_SIGSTOP = 19


def _syscall_nr(text: bytes | None) -> int:
    """``orig_rax`` from ``/proc/PID/task/TID/syscall``: the call number, else -1
    (not in a call, ``running``, or unreadable)."""
    try:
        nr = int((text or b"-1").split()[0])
    except (ValueError, IndexError):
        return _NO_SYSCALL
    return nr & _NO_SYSCALL


def _fxsave(raw: bytes, by: dict) -> bytes | None:
    """The 512-byte FXSAVE image (``user_fpregs_struct``) from a ``g`` reply, or None.

    lldb-server's ``g`` holds the image itself (fctrl … xmm15 at FXSAVE's
    offsets); gdbserver's holds gdb's i387 registers, repacked here as the
    kernel lays them out (``mxcsr_mask`` is not among them: 0).
    """
    def reg(n: str) -> tuple[int, int] | None:
        r = by.get(n)
        if r is None or r.offset < 0 or r.offset + r.bitsize // 8 > len(raw):
            return None
        return r.offset, r.bitsize // 8

    def abridged(ftag: int) -> int:     # the full tag word → FXSAVE's form (1 = not empty)
        return sum(1 << i for i in range(8) if (ftag >> (2 * i)) & 3 != 3)

    fc, x0 = reg("fctrl"), reg("xmm0")
    if fc and x0 and fc[1] == 2 and x0[0] - fc[0] == 160 and fc[0] + 416 <= len(raw):
        out = bytearray(raw[fc[0]:fc[0] + 416]) + bytes(96)
        # lldb-server shows the full 16-bit tag word where FXSAVE has the abridged byte
        out[4:6] = bytes([abridged(int.from_bytes(out[4:6], "little")), 0])
        return bytes(out)
    names = ["fctrl", "fstat", "ftag", "fop", "mxcsr"] + [f"st{i}" for i in range(8)] + \
        [f"xmm{i}" for i in range(16)]
    where = {n: reg(n) for n in names + ["fioff", "fiseg", "fooff", "foseg"]}
    if any(where[n] is None for n in names):
        return None

    def val(n: str) -> int:
        w = where.get(n)
        return int.from_bytes(raw[w[0]:w[0] + w[1]], "little") if w else 0

    ftw = abridged(val("ftag"))      # gdb: the full tag word
    out = bytearray(512)
    _FX_HEAD.pack_into(out, 0, val("fctrl") & 0xFFFF, val("fstat") & 0xFFFF, ftw, val("fop") & 0xFFFF,
                       val("fioff") | val("fiseg") << 32, val("fooff") | val("foseg") << 32,
                       val("mxcsr") & 0xFFFFFFFF, 0)
    for i in range(8):
        o, n = where[f"st{i}"]
        out[32 + 16 * i:32 + 16 * i + 10] = raw[o:o + min(n, 10)].ljust(10, b"\0")
    for i in range(16):
        o, n = where[f"xmm{i}"]
        out[160 + 16 * i:176 + 16 * i] = raw[o:o + min(n, 16)].ljust(16, b"\0")
    return bytes(out)


class RemoteTarget(Target):
    """The stopped process a gdb-remote server is attached to.  Use as a context manager.

    :param address: ``HOST:PORT`` of the server
    :param pid: the PID the caller means (checked against the server's), or None
    :param finder: how to find the binaries (default: same paths here, then
        debuginfod, then the server's files)
    :raises RemoteError: unreachable, silent, attached to another process
    :raises MissingBinary: a mapped binary found nowhere
    """

    def __init__(self, address: str, pid: int | None = None, *, finder: BinaryFinder | None = None,
                 timeout: float = 10.0, conn: GdbRemote | None = None, before_attach=None,
                 fork_events: bool = False):
        super().__init__()
        t0 = time.perf_counter_ns()
        self.conn = conn or GdbRemote(address, timeout=timeout, fork_events=fork_events)
        #: raw ``g`` replies by TID (what a fork capture writes back)
        self.raw_regs: dict[int, bytes] = {}
        self.address = address
        self._blocks: dict[int, bytes] = {}
        self._attached = True
        attached_here = False
        try:
            if self.conn.request("?")[:1] not in (b"T", b"S"):
                # a server with no process yet: attach now, the work that needs no stop done first
                self._attached = False
                t0 = self._attach_late(pid, before_attach)
                attached_here = True
            server_pid = self.conn.process_id()
            if server_pid is None:
                raise RemoteError(f"{address}: the server does not say which process it is attached to")
            if pid is not None and server_pid != pid:
                self._attached = False      # not ours to resume: leave the server's process alone
                raise RemoteError(f"the server at {address} is attached to process {server_pid}, not {pid}",
                                  hint=f"give PID {server_pid}, or attach the server to {pid}")
            self.pid = server_pid
            self.conn.stop_reason()         # raises when no process is stopped there
            self._load(finder)
        except BaseException:
            self.close()
            raise
        self.meta.update(backend="remote", mode="stop-copy", remote=address, attached_here=attached_here,
                         server_pid=server_pid, binary_reads=self.conn.binary_reads)
        self.stop_t0 = t0
        self.meta["connect_ns"] = time.perf_counter_ns() - t0

    def _attach_late(self, pid: int | None, before_attach) -> int:
        """Attach a server that has no process yet (``lldb-server-22 gdbserver HOST:PORT``,
        ``gdbserver --multi HOST:PORT``) to ``pid`` with ``vAttach``.  Before that, while
        the process still runs, its mappings are read (``vFile``) and
        ``before_attach(self)`` is called (the caller decodes the binaries' maps then).
        Returns the time of the attach (the start of the pause)."""
        c = self.conn
        if pid is None:
            raise RemoteError(f"the server at {self.address} is attached to no process",
                              hint="give the PID of the process to attach to")
        self.pid = pid
        try:
            self.mappings = parse_maps(c.file_read(f"/proc/{pid}/maps", 16 << 20).decode("utf-8", "replace"))
        except RemoteError as e:
            raise RemoteError(f"{self.address}: no process {pid} to attach to there ({e.message})",
                              hint="give the PID as the target's machine knows it") from None
        if before_attach is not None:
            before_attach(self)
        t0 = time.perf_counter_ns()
        r = c.request(f"vAttach;{pid:x}")
        if r[:1] not in (b"T", b"S"):
            raise RemoteError(f"the server at {self.address} could not attach to process {pid} "
                              f"({r[:20].decode('latin-1') or 'vAttach not supported'})",
                              hint="is the PID right, and may the server trace it?")
        self._attached = True
        return t0

    # --- loading ------------------------------------------------------------
    def _load(self, finder: BinaryFinder | None) -> None:
        c, pid = self.conn, self.pid
        self._by_name = {_ALIASES.get(r.name, r.name): r for r in c.registers_layout()}
        self._load_threads()
        self.auxv = c.xfer("auxv", "", 1 << 16)
        self.mappings = parse_maps(self._text(f"/proc/{pid}/maps", required=True))
        entry = self.auxv_entries().get(_AT_ENTRY, 0)
        m = self.mapping_at(entry)
        self.exe = m.path if m is not None else ""
        self.meta.update(self._proc_meta())
        finder = finder or BinaryFinder()
        if finder.fetch_remote is None:
            finder.fetch_remote = c.file_read
        self._finder = finder
        self._localized = localize(self, finder)

    def _load_threads(self) -> None:
        """Thread ids, names and registers (``orig_rax`` from ``/proc/PID/task/TID/syscall``
        where the server has no such register)."""
        c, pid, by_name = self.conn, self.pid, self._by_name
        tids = c.thread_ids()[:MAX_THREADS]
        if not tids:
            raise RemoteError(f"{self.address}: the server lists no threads")
        threads = []
        names = c.file_heads([f"/proc/{pid}/task/{tid}/comm" for tid in tids], 64)
        calls = c.file_heads([f"/proc/{pid}/task/{tid}/syscall" for tid in tids], 256) \
            if "orig_rax" not in by_name else [None] * len(tids)
        raws = c.registers(tids, pid)
        self.raw_regs = dict(zip(tids, raws))
        for tid, raw, name, call in zip(tids, raws, names, calls):
            regs = {n: 0 for n in GPR_NAMES}
            for n in GPR_NAMES:
                r = by_name.get(n)
                if r is not None and 0 <= r.offset and r.offset + r.bitsize // 8 <= len(raw):
                    regs[n] = int.from_bytes(raw[r.offset:r.offset + r.bitsize // 8], "little")
            if "orig_rax" not in by_name:
                regs["orig_rax"] = _syscall_nr(call)
            threads.append(ThreadSnapshot(tid, regs, _fxsave(raw, by_name),
                                          name=(name or b"").decode("utf-8", "replace").strip()))
        threads.sort(key=lambda t: t.tid)      # by TID, as the ptrace backend lists them
        self.threads = threads

    # --- letting it run -----------------------------------------------------
    @property
    def can_run(self) -> bool:
        """Whether the process can be let run and stopped again through this server
        (lldb-server: yes; gdbserver: its interrupt signals the process group, see
        :meth:`GdbRemote.interrupt`)."""
        return self.conn is not None and self.conn.server == "lldb-server" and self._attached

    def run_for(self, seconds: float) -> None:
        """Let the process run for ``seconds``, stop it again and re-read its threads,
        mappings and memory (what was cached is dropped).

        A signal that stops it meanwhile is handed back to its thread with the next
        resume (``vCont;C``), and the process is stopped again by our interrupt:
        no signal is lost.  (A ``SIGSTOP`` sent by someone else in that moment
        looks like our interrupt and is not handed back.)

        :raises RemoteError: the server cannot do it, the process exited, the link failed
        """
        c = self.conn
        if not self.can_run:
            raise RemoteError(f"{self.address}: {c.server if c else 'the server'} cannot stop the process "
                              "again once it runs")
        pending: tuple[int, int] | None = None
        for _ in range(MAX_SIGNAL_STOPS):
            c.pipeline_send(f"vCont;C{pending[0]:02x}:{pending[1]:x};c".encode() if pending else b"vCont;c")
            time.sleep(seconds)
            c.interrupt()
            st = parse_stop(c.wait_stop("stopping the process again", c.timeout))
            if st.signal < 0:
                self._attached = False
                raise RemoteError(f"{self.address}: process {self.pid} exited while it ran ({st.raw[:12]!r})")
            if st.signal in (0, _SIGSTOP):      # lldb-server reports its interrupt as SIGSTOP
                break
            # a signal for the process: it goes back to its thread on the next resume
            pending, seconds = (st.signal, st.tid or self.pid), 0.001
        else:
            raise RemoteError(f"{self.address}: more than {MAX_SIGNAL_STOPS} signals while the process ran")
        c.sync()
        self._blocks.clear()
        self._load_threads()
        self.mappings = parse_maps(self._text(f"/proc/{self.pid}/maps", required=True))
        if self._localized:
            import dataclasses
            self.mappings = [dataclasses.replace(m, path=self._localized.get(m.path, m.path))
                             for m in self.mappings]
        self.meta["runs"] = self.meta.get("runs", 0) + 1

    def _text(self, path: str, required: bool = False) -> str:
        try:
            return self.conn.file_read(path, 16 << 20).decode("utf-8", "replace")
        except RemoteError as e:
            if required:
                raise RemoteError(f"{e.message} (the tracer reads the target's {path} through vFile)",
                                  hint="use lldb-server-22 gdbserver or gdbserver, which allow it") from None
            return ""

    def _proc_meta(self) -> dict:
        from .live import parse_proc_meta
        pid = self.pid
        return parse_proc_meta(self._text(f"/proc/{pid}/stat"), self._text(f"/proc/{pid}/status"),
                               self._text(f"/proc/{pid}/cmdline").encode())

    # --- memory -------------------------------------------------------------
    def _fetch(self, ranges: list[tuple[int, int]], bufs: list) -> None:
        bad = self.conn.read_memory(ranges, bufs)
        if bad:
            a, n = bad[0]
            raise TargetFault(a, n)

    def _block(self, pos: int) -> tuple[int, bytes]:
        """(start, bytes) of the cached block holding ``pos``: the :data:`BLOCK`-aligned
        block clipped to the mapping of ``pos``; empty bytes when unreadable."""
        m = self.mapping_at(pos)
        if m is None or not m.readable:
            raise TargetFault(pos, 1)
        b = pos - pos % BLOCK
        lo, hi = max(b, m.start), min(b + BLOCK, m.end)
        data = self._blocks.get(lo)
        if data is None:
            buf = bytearray(hi - lo)
            try:
                self._fetch([(lo, hi - lo)], [buf])
                data = bytes(buf)
            except TargetFault:
                data = b""
            self._blocks[lo] = data
        return lo, data

    def _read(self, addr: int, size: int) -> bytes:
        if size >= DIRECT:
            buf = bytearray(size)
            self._fetch([(addr, size)], [buf])
            return bytes(buf)
        out = bytearray()
        pos, end = addr, addr + size
        while pos < end:                    # bounded: each round advances a block or raises
            lo, data = self._block(pos)
            if not lo <= pos < lo + len(data):
                raise TargetFault(addr, size)
            n = min(end, lo + len(data)) - pos
            out += data[pos - lo:pos - lo + n]
            pos += n
        return bytes(out)

    def _read_into(self, addr: int, view: memoryview) -> None:
        if len(view) >= DIRECT:
            self._fetch([(addr, len(view))], [view])
        else:
            view[:] = self.read(addr, len(view))

    # --- releasing ----------------------------------------------------------
    def close(self) -> None:
        """Detach: the process runs on, the server exits.  On a dead link the
        ``D`` is queued on the socket (TCP delivers it if the link comes back)."""
        conn = getattr(self, "conn", None)
        if conn is None:
            return
        self.meta.update(bytes_in=conn.bytes_in, bytes_out=conn.bytes_out, round_trips=conn.round_trips)
        if self._attached:
            conn.detach(self.pid)       # on a broken link: queued, not waited for
            self.meta["pause_ns"] = time.perf_counter_ns() - self.stop_t0 if hasattr(self, "stop_t0") else 0
        conn.close()
        self.conn = None
        self._blocks.clear()


def attach_remote(address: str, pid: int | None = None, *, sysroot: str | None = None,
                  timeout: float = 10.0, before_attach=None, fork_events: bool = False) -> RemoteTarget:
    """Connect to the gdb-remote server at ``address`` (``HOST:PORT``) and return
    its stopped process as a :class:`RemoteTarget` (detached on ``close()``).

    A server started without a process (``lldb-server-22 gdbserver HOST:PORT``,
    ``gdbserver --multi HOST:PORT``) is told to attach to ``pid`` here, after
    ``before_attach(target)`` (mappings known, nothing stopped yet): the process is
    stopped only from then on, not while the tracer starts."""
    return RemoteTarget(address, pid, finder=BinaryFinder(sysroot=sysroot), timeout=timeout,
                        before_attach=before_attach, fork_events=fork_events)


def capture_remote(rt: RemoteTarget, release: bool = True, *, busy=None, attempts: int = 1,
                   mode: str = "stop-copy"):
    """Copy what a stop-copy snapshot keeps (writable and anonymous memory, the
    ELF header pages) from the server, in pipelined reads, then (``release``) detach.

    :param busy: ``busy(target) -> str | None``: why this stop is a bad moment to
        copy (an arena lock held: a thread was inside malloc or free), or None;
        asked of the stopped process itself, before the copy (a few small reads)
    :param attempts: stops tried at most while ``busy`` says so; between two, the
        process runs a moment (20 ms, 40 ms, …: :meth:`RemoteTarget.run_for`).  Where
        the server cannot stop the process again (gdbserver) the first stop is
        copied and a warning says why.
    :param mode: ``"fork"``: a copy-on-write child made on the far side through the
        server (:func:`.remote_fork.capture_fork_remote`; where the server cannot, the
        copy is taken stopped and a warning says why)
    :returns: a :class:`~mappedtrace.target.capture.CapturedTarget`
    """
    notes, i = [], 0
    for i in range(max(1, attempts)):
        why = busy(rt) if busy is not None and attempts > 1 else None
        if why is None:
            break
        if i == attempts - 1:
            notes.append(f"{why} in each of {attempts} stops; the last one is copied")
            break
        if not rt.can_run:
            notes.append(f"{why}, and {rt.conn.server} cannot stop the process again once it runs "
                         "(its interrupt signals the whole process group): not retried; use "
                         "lldb-server-22 gdbserver for that")
            break
        rt.run_for(0.02 * (i + 1))
    if mode == "fork":
        from .remote_fork import capture_fork_remote
        ct = capture_fork_remote(rt)
    else:
        ct = _capture_once(rt)
    ct.warnings += notes
    ct.meta["lock_retries"] = i
    if release:
        rt.close()
        ct.meta.update({k: rt.meta[k] for k in ("pause_ns", "bytes_in", "bytes_out", "round_trips")
                        if k in rt.meta})
    return ct


def _capture_once(rt: RemoteTarget, within: list[tuple[int, int]] | None = None):
    """Copy through the server (from process ``rt.pid``); ``within``: only ranges inside
    these ``(start, end)`` mappings (a fork child's: it lacks ``MADV_DONTFORK`` ranges)."""
    from .capture import CapturedTarget, Piece, _layout, _pieces_for
    from .live import parse_anon_file_ranges
    anon = parse_anon_file_ranges(rt._text(f"/proc/{rt.pid}/smaps").splitlines())
    ranges, skipped = _pieces_for(rt.mappings, anon)
    if within is not None:
        ranges = [r for r in ranges if any(a <= r[0] and r[0] + r[1] <= b for a, b in within)]
    bufs = [bytearray(n) for _, n in ranges]
    t0 = time.perf_counter_ns()
    bad = sorted(rt.conn.read_memory(ranges, bufs))
    copy_ns = time.perf_counter_ns() - t0
    pieces, holes = [], []
    for (start, size), buf in zip(ranges, bufs):
        pos, view = start, memoryview(buf)
        for a, n in [b for b in bad if start <= b[0] < start + size]:
            if a > pos:
                pieces.append(Piece(pos, a - pos, view[pos - start:a - start]))
            holes.append((a, n))
            pos = a + n
        if pos < start + size:
            pieces.append(Piece(pos, start + size - pos, view[pos - start:]))
    meta = dict(rt.meta)
    meta.update(copy_ns=copy_ns, file_backed=[m.path for m in skipped if m.path], holes=len(holes))
    ct = CapturedTarget(pid=rt.pid, threads=rt.threads, mappings=rt.mappings, auxv=rt.auxv, exe=rt.exe,
                        pieces=_layout(rt.mappings, pieces, holes), meta=meta, warnings=list(rt.warnings))
    for s, n in holes[:20]:
        ct.warnings.append(f"{n} bytes at {s:#x} could not be read through the server (left out of the snapshot)")
    ct.meta["captured_bytes"] = ct.captured_bytes
    return ct


#: exit_group(2) on x86-64
_SYS_EXIT_GROUP = 231
#: bound on signals handed back to a program run to its exit
MAX_SIGNALS = 10000


def run_remote_to_exit(address: str, at_exit, *, sysroot: str | None = None,
                       timeout: float = 3600.0) -> int | None:
    """Run the program a server launched (``gdbserver HOST:PORT PROG ARGS…``) to its
    ``exit_group``, call ``at_exit(target)`` while every thread is held there (memory
    intact, like ``mappedtrace run``), then let it exit.

    Signals the program gets meanwhile are handed back to it (``vCont;C``).
    Needs ``QCatchSyscalls`` (gdbserver; lldb-server 22 does not have it).

    :returns: the program's exit code, or None when it was killed by a signal
    :raises RemoteError: no such support, the program died before exit, the link failed
    """
    conn = GdbRemote(address)
    try:
        if conn.features.get("QCatchSyscalls") != "+":
            raise RemoteError(f"{address}: the server cannot stop a program at its exit (no QCatchSyscalls)",
                              hint="launch it with gdbserver HOST:PORT PROG")
        conn.stop_reason()
        if conn.request(f"QCatchSyscalls:1;{_SYS_EXIT_GROUP:x}") != b"OK":
            raise RemoteError(f"{address}: the server refused to catch exit_group")
        rep = conn.resume_until("running the program", timeout).decode("latin-1")
        for _ in range(MAX_SIGNALS):
            if rep[:1] in ("W", "X"):
                raise RemoteError(f"{address}: the program ended ({rep[:12]}) before it could be stopped at exit")
            if rep[:1] == "T" and "syscall_" in rep:
                break       # at exit_group (gdbserver may call it the entry or the return)
            if rep[:1] != "T":
                raise RemoteError(f"{address}: unexpected stop reply {rep[:40]!r}")
            sig = int(rep[1:3], 16)
            th = next((kv[7:] for kv in rep.split(";") if kv.startswith("thread:")), None)
            # a signal stop: hand the signal back to the thread that got it, run on
            conn.pipeline_send(f"vCont;C{sig:02x}:{th};c".encode() if th and sig else b"vCont;c")
            rep = conn.wait_stop("running the program", timeout).decode("latin-1")
        else:
            raise RemoteError(f"{address}: more than {MAX_SIGNALS} signal stops before exit")
        rt = RemoteTarget(address, conn=conn, finder=BinaryFinder(sysroot=sysroot))
        rt.meta["mode"] = "exit"
        rt._attached = False        # it exits below; no detach
        at_exit(rt)
        conn.request("QCatchSyscalls:0")
        rep = conn.resume_until("the program's exit", 60).decode("latin-1")
        return int(rep[1:].split(";")[0], 16) if rep[:1] == "W" else None
    finally:
        conn.close()
