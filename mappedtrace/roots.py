"""Roots: where the marker starts (DESIGN step 6).

A :class:`Root` is either a pointer *value* (a register or stack word that
the maps say holds a pointer), or a *range* of memory to scan: typed when
its type is known (a global, a thread-local, a live alloca), conservatively
when it is not (an uninstrumented frame, an unsettled top frame, a binary
without maps).  Every root keeps its provenance.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from .errors import TargetFault
from .formats import elf
from .target.base import CALLEE_SAVED, DWARF_REGS, SETTLED, Target


@dataclass(frozen=True)
class Root:
    """One root.

    ``kind == "value"``: ``value`` is a pointer, ``type_id`` its pointee type
    (0 unknown).  ``kind == "range"``: ``value`` is the start address of
    ``size`` bytes holding an object of type ``type_id`` (0: scan every
    aligned word conservatively).  ``exact`` is True when the root comes from
    the maps (its pointer-ness is known), False when it was guessed.
    """

    kind: str          # "value" | "range"
    value: int
    size: int
    type_id: int
    exact: bool
    source: str        # e.g. "thread 4242 #2 main rbx", "global kept_list", "tls kept_tree [4242]"
    thread: int | None = None
    #: where an exact value root's word lives, for tools that rewrite it (the
    #: relocator): ``("mem", address)`` for a stack slot, ``("reg", frame, name)``
    #: for a register of an unwound frame; None when unknown
    where: tuple | None = None


# --------------------------------------------------------------------------
# Collecting the roots of a stopped target
# --------------------------------------------------------------------------

#: x86-64 System V red zone: a leaf function may keep data this far below rsp.
RED_ZONE = 128
#: bytes of ``struct pthread`` (the TCB) above fs_base scanned conservatively
#: (glibc 2.36 x86-64: sizeof(struct pthread) is 2304).
TCB_SCAN = 2304
#: bytes of static TLS below fs_base (modules' TLS blocks + glibc's surplus)
#: scanned conservatively, minus the typed blocks of instrumented modules.
STATIC_TLS_SCAN = 8192
#: glibc 2.36 functions on the path from main's return (or exit()) to the
#: exit_group syscall.  At that point their frames hold no pointer into the
#: program's heap (only argc/argv/envp, libc's own exit-handler lists, which
#: libc's data also reaches, and stale words from earlier calls); with
#: ``exit_frames_rootless`` they count as exact frames with no roots instead
#: of being scanned — the stale words are why a conservative scan of them
#: misses leaks.  An assumption about glibc, stated here, checked by the leak
#: corpus tests.
EXIT_PATH_FUNCTIONS = frozenset({
    "_exit", "_Exit", "__GI__exit", "__run_exit_handlers", "exit", "__GI_exit",
    "__libc_start_call_main", "__libc_start_main", "__libc_start_main_impl",
    "__libc_start_main_alias_2", "_start",
})

#: glibc functions that end the process: at exit, the first frame below libc's
#: frames on top of the exiting thread (one of them among those) keeps its exact
#: maps, and every program frame below it — callers waiting for a call that
#: never returns — is scanned conservatively (:meth:`RootCollector._exit_callers`).
EXIT_CALLS = frozenset({"exit", "__GI_exit", "_exit", "_Exit", "__GI__exit", "quick_exit"})

#: the functions of the pass's fatal list (llvm_pass/FORMAT.md, "Calls without a
#: map point") that end the process at once: the pass leaves calls of them plain
#: calls, with no record, so at exit the program frame that called one of them
#: has no map point; nothing in it is live (no code of the program runs again)
#: and it counts as known rootless, as its empty record would have said.
IMMEDIATE_EXIT_CALLS = frozenset({"_exit", "_Exit", "__GI__exit"})

#: registers that can hold a pointer (not rip/segment/flags)
POINTER_REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10",
                "r11", "r12", "r13", "r14", "r15")


@dataclass
class RootStats:
    """How exact the roots are (printed in every report)."""

    frames_exact: int = 0            # instrumented frames decoded with the maps
    frames_conservative: int = 0     # uninstrumented or unsettled frames, scanned
    frames_unsettled: int = 0        # instrumented top frames not at a map point
    roots_exact: int = 0
    roots_conservative: int = 0
    bytes_scanned_conservatively: int = 0   # stack/global/anonymous bytes scanned as words
    globals_typed: int = 0
    tls_typed: int = 0
    modules_with_maps: list[str] = field(default_factory=list)
    modules_without_maps: list[str] = field(default_factory=list)
    unreadable: int = 0              # locations that could not be evaluated
    frames_known_rootless: int = 0   # glibc exit-path frames (EXIT_PATH_FUNCTIONS), frames at a return
    dead_stack_bytes_skipped: int = 0   # cached stacks of exited threads (stale data)
    #: program frames below the caller of exit() scanned at exit (LeakSanitizer's rule; also
    #: counted in frames_conservative)
    frames_exit_path_scanned: int = 0
    #: stack memory above the outermost described frame, up to the stack's end (the
    #: argv/envp/auxv area of the main thread; a stack the unwinder could not finish)
    stack_above_frames_bytes: int = 0
    tls_blocks_scanned: int = 0      # static TLS blocks of modules (from the link maps)
    #: callee-saved registers of uninstrumented top frames not scanned: they hold an exact
    #: caller's values, which its map record describes (:meth:`RootCollector._callers_registers`)
    registers_left_to_exact_callers: int = 0
    #: glibc frames counted exact by the glibc model (:mod:`mappedtrace.glibc_model`; also in
    #: frames_exact), by kind ("syscall wrapper", "blocking wait", "stdio read", "start-up",
    #: "thread start"); ``glibc_model`` names the modelled build, or says why the model is off
    frames_exact_by_glibc_model: int = 0
    frames_by_model: dict[str, int] = field(default_factory=dict)
    glibc_model: str = ""
    threads: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class RootSet:
    roots: list[Root]
    stats: RootStats
    frames: dict[int, list] = field(default_factory=dict)   # tid → unwound frames
    warnings: list[str] = field(default_factory=list)
    #: derived pointers of exact frames (not roots: each points into the object of
    #: a base that is one): ``(value, where, source, tid)``, ``where`` as :attr:`Root.where`
    derived: list[tuple[int, tuple | None, str, int]] = field(default_factory=list)
    #: tid → how each frame (by index) was taken: ``maps``, ``glibc model: KIND``,
    #: ``known rootless``, ``scanned``, ``exit path (scanned)``
    frame_kinds: dict[int, list[str]] = field(default_factory=dict)


def _subtract(ranges: list[tuple[int, int]], holes: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """``ranges`` minus ``holes`` (both half-open [lo, hi)), sorted."""
    hs = sorted(h for h in holes if h[0] < h[1])
    out = []
    for lo, hi in sorted(ranges):
        cur = lo
        for hlo, hhi in hs:
            if hhi <= cur or hlo >= hi:
                continue
            if hlo > cur:
                out.append((cur, hlo))
            cur = max(cur, hhi)
            if cur >= hi:
                break
        if cur < hi:
            out.append((cur, hi))
    return out


class RootCollector:
    """Finds the roots of a stopped target (DESIGN step 6).

    * instrumented frames at a map point: exactly the entries of the record
      (registers of the unwound frame, stack slots, live allocas with types);
    * other frames (uninstrumented code, unsettled top frames): their stack
      range is scanned conservatively, the top frame's registers too;
    * globals and thread-locals of instrumented modules: typed, from ``.mtmap``
      (thread-locals located through the dynamic linker's link maps);
    * writable data of modules without maps, the TCB, every module's static
      TLS block, the stack above the outermost described frame (argv, envp,
      auxv; the rest of a stack the unwinder could not finish), and anonymous
      mappings that are neither heap nor stack: conservatively.

    ``mode="conservative"`` ignores the maps (the LeakSanitizer baseline).
    ``glibc_model`` (precise mode only): glibc frames that :mod:`mappedtrace.glibc_model`
    proves rootless count as exact and are not scanned; off for the relocator, which
    must pin whatever such a frame may hold (a buffer the kernel is filling).
    ``exit_frames_rootless`` (the target is at its group exit): glibc's exit
    path holds no roots, and the callers of the frame that called exit() are
    scanned (:meth:`_exit_callers`).
    """

    def __init__(self, target: Target, modules, maps_for: Callable[[str], object | None],
                 unwinder, *, heap_ranges: Iterable[tuple[int, int]] = (),
                 allocator_ranges: Iterable[tuple[int, int]] = (), mode: str = "precise",
                 exit_frames_rootless: bool = False, glibc_model: bool = True):
        self.t = target
        self.modules = modules
        self.maps_for = maps_for
        self.unwinder = unwinder
        self.heap_ranges = list(heap_ranges)
        self.mode = mode
        self.exit_frames_rootless = exit_frames_rootless and mode == "precise"
        self.glibc_model = glibc_model and mode == "precise"
        self.frame_kinds: dict[int, list[str]] = {}
        #: tid → the end of what the thread's frames describe (the outermost CFA)
        self._frames_top: dict[int, int] = {}
        self.roots: list[Root] = []
        self.stats = RootStats(threads=len(target.threads))
        self.warnings: list[str] = []
        # ranges never scanned conservatively: typed roots, and the allocator's own
        # bookkeeping (malloc_state's bins and top point at chunk headers, which
        # would look like interior pointers into the neighbouring chunks)
        self._exact_ranges: list[tuple[int, int]] = list(allocator_ranges)
        self._conservative: list[tuple[int, int, str, int | None]] = []
        self.derived: list[tuple[int, tuple | None, str, int]] = []

    # -- helpers -------------------------------------------------------------
    def _maps(self, module):
        if module is None or self.mode == "conservative":
            return None
        bm = self.maps_for(module.path)
        return bm if bm is not None and getattr(bm, "has_maps", False) else None

    def _add(self, root: Root) -> None:
        self.roots.append(root)
        if root.exact:
            self.stats.roots_exact += 1
        else:
            self.stats.roots_conservative += 1

    def _scan(self, lo: int, hi: int, source: str, thread: int | None = None) -> None:
        """Queue [lo, hi) for a conservative scan (clipped to readable mappings later)."""
        if hi > lo:
            self._conservative.append((lo, hi, source, thread))

    def _loc_value(self, loc, regs: dict[str, int]) -> int | None:
        kind = loc.kind
        if kind in ("Constant", "ConstantIndex"):
            return loc.offset
        reg = DWARF_REGS.get(loc.dwarf_reg)
        if reg is None or reg not in regs:
            return None
        base = regs[reg]
        if kind == "Register":
            return base
        if kind == "Direct":
            return (base + loc.offset) & ((1 << 64) - 1)
        if kind == "Indirect":
            try:
                return self.t.read_u64((base + loc.offset) & ((1 << 64) - 1))
            except TargetFault:
                return None
        return None

    # -- frames ------------------------------------------------------------
    def _thread(self, th) -> None:
        try:
            frames = self.unwinder.unwind(th)
        except Exception as e:  # the unwinder must not spoil the whole report
            self.warnings.append(f"thread {th.tid}: unwinding failed: {e}")
            frames = []
        self.frames[th.tid] = frames
        if not frames:
            lo = th.sp - RED_ZONE
            m = self.t.mapping_at(th.sp)
            self._scan(lo, m.end if m else th.sp + 4096, f"thread {th.tid} stack (not unwound)", th.tid)
            self._regs(th.regs, th.tid, "top")
            return
        exit_callers = self._exit_callers(frames)
        models = self._frame_models(th, frames, exit_callers)
        self.frame_kinds[th.tid] = []
        top = 0
        for f in frames:
            top = max(top, self._frame(th, f, frames, f.index >= exit_callers, models[f.index]))
        self._frames_top[th.tid] = top
        self._stack_above(th, frames[-1], top)

    def _exit_callers(self, frames) -> int:
        """Index of the first frame that waits on a call to exit() that never returns.

        At exit (``exit_frames_rootless``), the thread that ends the process
        has glibc's exit path on top (``_exit`` ← ``__run_exit_handlers`` ←
        ``exit``), then the program frame that called exit(): its dead slots
        are not roots (``tests/leak_corpus/stale_slot.c``).  Every frame below
        that one was in the middle of a call when the program decided to end:
        the maps say its locals are dead only because the call does not return
        (jq's ``main`` → ``die()`` → ``exit(2)``), so those frames are scanned
        conservatively, as LeakSanitizer scans every stack at exit.  Returns
        ``len(frames)`` when nothing is to be scanned that way.
        """
        if not self.exit_frames_rootless:
            return len(frames)
        # the libc frames on top (named by libc's exported symbols when its debug
        # file is missing: ``exit`` and ``_exit`` are exported, __run_exit_handlers
        # is not), among them an exit function
        i = 0
        while i < len(frames) and _in_libc(self.modules.module_at(frames[i].pc)):
            i += 1
        if not any(f.function in EXIT_CALLS for f in frames[:i]):
            return len(frames)
        return i + 1 if i < len(frames) else len(frames)

    def _stack_above(self, th, last, top: int) -> None:
        """Scan the thread's stack from ``top`` (the end of what its frames
        describe) to the end of the stack mapping, conservatively.

        Above the outermost frame of the main thread lie argc, the argv and
        environ arrays, auxv and the strings (setproctitle implementations keep
        heap copies of argv/environ there: Redis, nginx); above a frame the
        unwinder could not go past lies the rest of the stack, undescribed.  A
        thread created by pthread_create has its static TLS and TCB at the top
        of its stack mapping: those are scanned as TLS (:meth:`_globals`)."""
        m = self.t.mapping_at(last.sp_low)
        if m is None or top >= m.end:
            return
        end = m.end
        fs = th.regs.get("fs_base", 0)
        if m.contains(fs):
            end = min(end, self._static_tls_low(th))
        if end > top:
            what = "argv, envp, auxv" if th.tid == self.t.pid or m.path == "[stack]" else "thread start"
            self._scan(top, end, f"thread {th.tid} stack above #{last.index} ({what})", th.tid)
            self.stats.stack_above_frames_bytes += end - top

    def _regs(self, regs: dict[str, int], tid: int, where: str, skip: frozenset[str] = frozenset()) -> None:
        for r in POINTER_REGS:
            if r in regs and r not in skip:
                self._add(Root("value", regs[r], 0, 0, False, f"thread {tid} {where} {r}", tid))

    def _frame(self, th, f, frames, exit_caller: bool = False, model: str | None = None) -> int:
        """Roots of one frame; returns the address up to which the frame's stack
        memory is accounted for (its CFA, or the end of what was scanned).
        ``model``: the glibc model's kind for this frame (:meth:`_frame_models`)."""
        kinds = self.frame_kinds.setdefault(th.tid, [])
        mod = self.modules.module_at(f.pc)
        bm = self._maps(mod)
        fname = f.function or "?"
        desc = f"thread {th.tid} #{f.index} {fname}"
        described = f.cfa if f.cfa is not None else f.sp_low
        if exit_caller and f.function not in EXIT_PATH_FUNCTIONS and not self._at_return(f, mod, bm, frames):
            # a caller of the function that called exit() (see _exit_callers): the
            # whole frame, and the callee-saved registers recovered for it
            self.stats.frames_conservative += 1
            self.stats.frames_exit_path_scanned += 1
            self._scan(f.sp_low, f.sp_high, f"{desc} (on the exit path, scanned)", th.tid)
            self._regs(f.regs, th.tid, f"#{f.index} {fname} (exit path)")
            kinds.append("exit path (scanned)")
            return f.sp_high
        rec = None
        if bm is not None:
            rec = bm.record_at(f.pc - mod.bias)
            if rec is not None and f.index == 0 and th.settle not in (SETTLED, "uninstrumented", "not-settled"):
                rec = None
        if rec is not None:
            self.stats.frames_exact += 1
            for e in rec.entries:
                v = self._loc_value(e.location, f.regs)
                if e.role == "derived":
                    # points into the object of its base, a VALUE of the same record
                    if v is not None:
                        self.derived.append((v, _loc_where(e.location, f), f"{desc} {_loc_str(e.location)}", th.tid))
                    continue
                if v is None:
                    self.stats.unreadable += 1
                    continue
                if e.role == "value":
                    self._add(Root("value", v, 0, e.type_id, True, f"{desc} {_loc_str(e.location)}", th.tid,
                                   _loc_where(e.location, f)))
                else:
                    ti = bm.types.get(e.type_id) if e.type_id else None
                    size = ti.size if ti is not None and ti.size else 8
                    self._add(Root("range", v, size, e.type_id, True, f"{desc} slot {_loc_str(e.location)}", th.tid))
                    self._exact_ranges.append((v, v + size))
            kinds.append("maps")
            return described
        if self.exit_frames_rootless and f.function in EXIT_PATH_FUNCTIONS and \
                mod is not None and (mod.name.startswith("libc.so") or mod is self.modules.main):
            self.stats.frames_exact += 1
            self.stats.frames_known_rootless += 1
            kinds.append("known rootless")
            return described
        if model is not None:
            # glibc_model.py: what the frame holds is known from glibc's source, and no
            # heap pointer the program still needs is only there; its registers (the top
            # frame's included) are its own copies or an exact/modelled caller's values
            self.stats.frames_exact += 1
            self.stats.frames_exact_by_glibc_model += 1
            self.stats.frames_by_model[model] = self.stats.frames_by_model.get(model, 0) + 1
            kinds.append(f"glibc model: {model}")
            return described
        # no record: uninstrumented code, or an instrumented frame not at a map point
        fi = bm.function_at(f.pc - mod.bias) if bm is not None else None
        if self._at_return(f, mod, bm, frames):
            self.stats.frames_exact += 1
            self.stats.frames_known_rootless += 1
            kinds.append("known rootless")
            return described
        if self.exit_frames_rootless and bm is not None and 0 < f.index and not _interrupted(frames, f) \
                and frames[f.index - 1].function in IMMEDIATE_EXIT_CALLS \
                and (caller := bm.function_at(f.pc - mod.bias - 1)) is not None and caller.status != "skipped":
            # (pc - 1: a noreturn call may be the function's last instruction)
            self.stats.frames_exact += 1
            self.stats.frames_known_rootless += 1
            kinds.append("known rootless (calls _exit)")
            return described
        # (an instrumented frame stopped at a call of a fatal function, e.g.
        # abort or __assert_fail, has no record there either: scanned below)
        if fi is not None and fi.status != "skipped":
            self.stats.frames_unsettled += 1
        self.stats.frames_conservative += 1
        # the top frame and a frame interrupted by a signal may use the red zone below rsp
        lo = f.sp_low - (RED_ZONE if f.index == 0 or _interrupted(frames, f) else 0)
        self._scan(lo, f.sp_high, f"{desc} (frame scanned)", th.tid)
        if f.index == 0:
            skip = self._callers_registers(frames)
            self.stats.registers_left_to_exact_callers += len(skip)
            self._regs(f.regs, th.tid, f"#0 {fname}", skip)
        kinds.append("scanned")
        return f.sp_high

    # -- the glibc model -----------------------------------------------------
    def _libc_model(self):
        """The :class:`~mappedtrace.glibc_model.GlibcModel` of the target's libc, or None."""
        if not hasattr(self, "_glibc"):
            self._glibc = None
            libc = next((m for m in self.modules if _in_libc(m)), None)
            if libc is not None and self.glibc_model:
                from .glibc_model import model_for
                self._glibc = model_for(libc.path)
                self.stats.glibc_model = self._glibc.version or f"off: {self._glibc.why_off}"
                if not self._glibc.on:
                    self.warnings.append(self._glibc.why_off)
                    self._glibc = None
        return self._glibc

    def _has_record(self, th, f) -> bool:
        """``f`` is decoded with the maps (the test of :meth:`_frame`)."""
        mod = self.modules.module_at(f.pc)
        bm = self._maps(mod)
        if bm is None or bm.record_at(f.pc - mod.bias) is None:
            return False
        return not (f.index == 0 and th.settle not in (SETTLED, "uninstrumented", "not-settled"))

    def _frame_models(self, th, frames, exit_callers: int | None = None) -> list[str | None]:
        """The glibc model's kind of each frame (None: not modelled).

        A frame is a candidate when its own rule holds (top-down: a wrapper
        stopped after its system call, a waiter waiting on a candidate callee it
        may call); it is modelled when its caller is exact, known rootless or
        modelled too (bottom-up), or, for the start-up and thread-start frames,
        when it and every frame below it are such frames.  A frame scanned on
        the exit path (index ``exit_callers`` and below, :meth:`_exit_callers`)
        is no exact caller.
        """
        if exit_callers is None:
            exit_callers = len(frames)
        out: list[str | None] = [None] * len(frames)
        if not self.glibc_model or not frames:
            return out
        gm = self._libc_model()
        if gm is None:
            return out
        main = self.modules.main
        starts: list[int | None] = []
        in_libc: list[bool] = []
        for f in frames:
            mod = self.modules.module_at(f.pc)
            in_libc.append(_in_libc(mod))
            starts.append(f.pc - f.symbol_offset - mod.bias
                          if mod is not None and f.symbol_offset is not None else None)
        cand: list[str | None] = [None] * len(frames)
        for i, f in enumerate(frames):
            if not in_libc[i] or starts[i] is None or f.how not in ("top", "cfi"):
                continue
            link_pc = starts[i] + f.symbol_offset
            names = gm._names_at(starts[i])
            ends = gm.wrapper(starts[i])
            if i == 0:
                if ends is not None and link_pc in ends:
                    cand[i] = "syscall wrapper"
                continue
            callee = frames[i - 1]
            if callee.how not in ("top", "cfi") or cand[i - 1] is None:
                continue
            if ends is not None and link_pc in ends:
                cand[i] = "syscall wrapper"
                continue
            callee_names = gm._names_at(starts[i - 1]) if starts[i - 1] is not None else set()
            from .glibc_model import WAITERS
            for n in names & WAITERS.keys():
                kind, allowed = WAITERS[n]
                if callee_names & set(allowed):
                    cand[i] = kind
                    break
        # the bottom runs: start-up (main thread) and thread start (a created thread)
        from .glibc_model import START_FUNCTIONS, THREAD_FUNCTIONS
        last = frames[-1]
        main_thread = th.tid == self.t.pid
        if main_thread and last.function == "_start" and self.modules.module_at(last.pc) is main:
            for i in range(len(frames) - 1, -1, -1):
                f = frames[i]
                if i == len(frames) - 1 or (in_libc[i] and f.how == "cfi" and
                                            gm._names_at(starts[i] or 0) & START_FUNCTIONS):
                    cand[i] = "start-up"
                else:
                    break
        elif not main_thread and in_libc[-1] and gm._names_at(starts[-1] or 0) & THREAD_FUNCTIONS:
            for i in range(len(frames) - 1, -1, -1):
                f = frames[i]
                names = gm._names_at(starts[i] or 0) if in_libc[i] else set()
                if not names & THREAD_FUNCTIONS or f.how not in ("top", "cfi"):
                    break
                if "start_thread" in names and gm.call_target_before(starts[i] + f.symbol_offset) != -1:
                    break       # not waiting on the start routine (an indirect call)
                cand[i] = "thread start"
        # bottom-up: a modelled frame needs an exact, rootless or modelled caller
        caller_ok = True
        for i in range(len(frames) - 1, -1, -1):
            f = frames[i]
            if cand[i] is not None and (caller_ok or cand[i] in ("start-up", "thread start")):
                out[i] = cand[i]
                caller_ok = True
                continue
            mod = self.modules.module_at(f.pc)
            caller_ok = i < exit_callers and (self._has_record(th, f) or
                                              self._at_return(f, mod, self._maps(mod), frames))
        return out

    def _callers_registers(self, frames) -> frozenset[str]:
        """Callee-saved registers of an uninstrumented top frame that hold values
        of an exact caller: no frame from the top down to that caller saved them
        (their CFI rows leave them alone, so by the ABI they still hold the
        caller's values), and the caller's map record says which of its
        registers are live at its call: those are rooted from the record, the
        others are dead (a libc ``pause()`` under ``main`` with a dead pointer
        left in r14 hid a leaked chain: benchmarks/trace/RESULTS.md)."""
        out = set()
        for r in CALLEE_SAVED:
            for f in frames[:-1]:
                if r not in f.keeps:
                    break                       # this frame saved it: the value is its own
                caller = frames[f.index + 1]
                if caller.how != "cfi" or caller.regs.get(r) != frames[0].regs.get(r):
                    break
                mod = self.modules.module_at(caller.pc)
                bm = self._maps(mod)
                if bm is not None and bm.record_at(caller.pc - mod.bias) is not None:
                    out.add(r)                  # an exact frame at a map point decides
                    break
        return frozenset(out)

    def _at_return(self, f, mod, bm, frames) -> bool:
        """``f`` waits on a call in tail position that the backend did not make a
        jump (an epilogue at the return address): nothing in the frame is live,
        whether or not the callee returns."""
        if bm is None or f.index == 0 or _interrupted(frames, f):
            return False
        fi = bm.function_at(f.pc - mod.bias)
        return fi is not None and fi.status != "skipped" and bm.returns_at(f.pc - mod.bias)

    # -- globals, TLS, other memory ------------------------------------------
    def _tls_block(self, th, module) -> int | None:
        """Address of ``module``'s TLS block in thread ``th``, from the dynamic
        linker's records (:mod:`mappedtrace.tls`); for an executable without
        them (static), its variant II block ending at the thread pointer."""
        tm = self.modules.tls.for_module(module)
        if tm is not None:
            try:
                return self.modules.tls.block(self.t, th, tm)
            except TargetFault:
                return None
        seg = elf.tls_segment(module.path)
        fs = th.regs.get("fs_base", 0)
        if module is not self.modules.main or seg is None or not fs or self.modules.tls.modules:
            return None
        _vaddr, memsz, align = seg
        align = max(align, 1)
        return fs - (memsz + align - 1) // align * align

    def _static_tls_low(self, th) -> int:
        """Lowest address of ``th``'s static TLS (the link maps' blocks, and at
        least STATIC_TLS_SCAN bytes below the thread pointer)."""
        fs = th.regs.get("fs_base", 0)
        low = fs - STATIC_TLS_SCAN
        for tm in self.modules.tls.modules:
            if tm.static_offset is not None:
                low = min(low, fs - tm.static_offset)
        return low

    def _globals(self) -> None:
        for mod in self.modules:
            bm = self._maps(mod)
            if bm is None:
                self.stats.modules_without_maps.append(mod.path)
                for m in self.t.mappings:
                    if m.path == mod.path and m.writable and m.readable:
                        self._scan(m.start, m.end, f"data of {os.path.basename(mod.path)} (no maps)")
                continue
            self.stats.modules_with_maps.append(mod.path)
            # Writable data outside the listed globals: pointer-free globals of
            # instrumented code, but also the statics of code linked in without
            # maps (Rust's precompiled std, a plain-compiled .o): scanned
            # conservatively, minus the typed globals below.  (Imprecision: a
            # pointer-free global of instrumented code is scanned too; the pass
            # would have to list those to avoid it.)
            for m in self.t.mappings:
                if m.path == mod.path and m.writable and m.readable:
                    self._scan(m.start, m.end, f"data of {mod.name} outside its typed globals")
            for g in bm.globals:
                if g.tls:
                    sym = elf.symbol(mod.path, g.name)
                    for th in self.t.threads:
                        blk = self._tls_block(th, mod)
                        if blk is None or sym is None:
                            self.warnings.append(f"thread-local {g.name} of {mod.name} not located")
                            continue
                        addr = blk + sym.addr
                        self._add(Root("range", addr, g.size, g.type_id, True, f"tls {g.name} [{th.tid}]", th.tid))
                        self._exact_ranges.append((addr, addr + g.size))
                        self.stats.tls_typed += 1
                else:
                    addr = g.address + mod.bias
                    self._add(Root("range", addr, g.size, g.type_id, True, f"global {g.name}"))
                    self._exact_ranges.append((addr, addr + g.size))
                    self.stats.globals_typed += 1
        self.warnings.extend(self.modules.tls.warnings)
        for th in self.t.threads:
            fs = th.regs.get("fs_base", 0)
            m = self.t.mapping_at(fs) if fs else None
            if m is not None:
                # the TCB and the static TLS blocks lie in one allocation (ld.so's, or
                # the top of a thread's stack): never scan past the mapping holding them.
                # In a created thread's stack the frames lie below the static TLS
                # (glibc's allocate_stack): never scan into what its frames describe
                lo = max(m.start, fs - STATIC_TLS_SCAN)
                ftop = self._frames_top.get(th.tid)
                if ftop is not None and m.contains(th.sp) and lo < ftop <= fs:
                    lo = ftop
                self._scan(lo, min(m.end, fs + TCB_SCAN), f"TCB and static TLS [{th.tid}]", th.tid)
                # every module's static TLS block, wherever the link maps put it (typed
                # thread-locals of instrumented modules are subtracted as exact ranges)
                for tm in self.modules.tls.modules:
                    if tm.static_offset is None:
                        continue    # dlopen'ed: its block is a heap chunk, reached through the DTV
                    lo = fs - tm.static_offset
                    self._scan(max(m.start, lo), min(m.end, lo + tm.blocksize),
                               f"TLS of {tm.module.name} [{th.tid}]", th.tid)
                    self.stats.tls_blocks_scanned += 1

    def _anonymous(self) -> None:
        """Anonymous writable mappings that are neither heap nor a live thread's stack.

        A thread stack that no live thread uses (glibc caches the stacks of
        exited threads) holds only stale data: it is recognised by the TCB
        self-pointers of its ``struct pthread`` near its top and skipped.
        """
        stacks = []
        for th in self.t.threads:
            m = self.t.mapping_at(th.sp)
            if m is not None:
                stacks.append((m.start, m.end))
        holes = stacks + self.heap_ranges
        # the main thread's TCB, static TLS and first DTV live in an anonymous
        # mapping of ld.so's that looks like a cached stack: it is not stale
        live_tcbs = {th.regs.get("fs_base", 0) for th in self.t.threads}
        for m in self.t.mappings:
            if not (m.readable and m.writable) or m.path != "" or m.size == 0:
                continue
            tcb = None if (m.start, m.end) in stacks else self._dead_thread_tcb(m)
            if tcb in live_tcbs:
                tcb = None
            if tcb is not None:
                # glibc's stack cache still owns the exited thread's struct pthread
                # (its DTV is malloc'd); the rest of the stack and its TLS are stale
                lo, hi = tcb, min(m.end, tcb + TCB_SCAN)
                self.stats.dead_stack_bytes_skipped += m.size - (hi - lo)
                self._scan(lo, hi, "TCB of an exited thread (glibc stack cache)")
                continue
            for lo, hi in _subtract([(m.start, m.end)], holes):
                self._scan(lo, hi, "anonymous mapping")

    def _dead_thread_tcb(self, m) -> int | None:
        # glibc: struct pthread (the TCB) sits at the top of a thread's stack
        # mapping; tcbhead_t.tcb (offset 0) and .self (offset 16) point to it.
        top = min(m.size, 0x8000)
        try:
            data = self.t.read(m.end - top, top)
        except TargetFault:
            return None
        words = np.frombuffer(data, dtype="<u8")
        addrs = np.arange(m.end - top, m.end, 8, dtype=np.uint64)
        hits = np.nonzero(words == addrs)[0]
        for i in hits[:64]:
            if i + 2 < len(words) and words[i + 2] == addrs[i]:
                return int(addrs[i])
        return None

    def collect(self) -> RootSet:
        self.frames: dict[int, list] = {}
        for th in self.t.threads:
            self._thread(th)
        self._globals()
        self._anonymous()
        # conservative ranges, each byte once (the first range by start address
        # names it), minus what is already covered exactly, clipped to readable mappings
        exact = sorted(self._exact_ranges)
        readable = [(m.start, m.end) for m in self.t.mappings if m.readable]
        done = 0
        for lo, hi, src, tid in sorted(self._conservative, key=lambda r: (r[0], -r[1])):
            lo = max(lo, done)
            if hi <= lo:
                continue
            done = hi
            for a, b in _subtract([(lo, hi)], exact):
                for ra, rb in readable:
                    s, e = max(a, ra), min(b, rb)
                    if s < e:
                        s = (s + 7) & ~7
                        if e - s >= 8:
                            self._add(Root("range", s, e - s, 0, False, src, tid))
                            self.stats.bytes_scanned_conservatively += e - s
        return RootSet(self.roots, self.stats, self.frames, self.warnings, self.derived, self.frame_kinds)


def _in_libc(mod) -> bool:
    return mod is not None and mod.name.startswith("libc.so")


def _interrupted(frames, f) -> bool:
    """``f`` was interrupted by a signal (its registers come from a ucontext)."""
    return f.how == "signal"


def _loc_where(loc, f) -> tuple | None:
    """Where the word of a map location lives in frame ``f`` (see :attr:`Root.where`)."""
    reg = DWARF_REGS.get(loc.dwarf_reg)
    if reg is None or reg not in f.regs:
        return None
    if loc.kind == "Register":
        return ("reg", f.index, reg)
    if loc.kind == "Indirect":
        return ("mem", (f.regs[reg] + loc.offset) & ((1 << 64) - 1))
    return None


def _loc_str(loc) -> str:
    reg = DWARF_REGS.get(loc.dwarf_reg, f"r{loc.dwarf_reg}")
    if loc.kind == "Register":
        return reg
    if loc.kind == "Direct":
        return f"{reg}{loc.offset:+#x}"
    if loc.kind == "Indirect":
        return f"[{reg}{loc.offset:+#x}]"
    return f"const {loc.offset:#x}"
