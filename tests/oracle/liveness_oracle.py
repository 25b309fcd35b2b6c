"""An independent oracle for the map contract — test code only, never imported
by ``mappedtrace`` (STYLE.md: a second implementation is kept only as an oracle).

The contract (DESIGN.md, FORMAT.md §1): at every call in instrumented code the
pass records every pointer value live across the call.  This module checks it
on the LLVM IR that clang-22 prints *after* the pass (the pass runs at
OptimizerLast, so ``clang-22 -O2 -g -fpass-plugin=P -S -emit-llvm`` prints what
the backend is given):

1. the module is parsed with llvmlite (LLVM 22.1); nothing is shared with
   llvm_pass/Analysis.cpp;
2. liveness of pointer SSA values is recomputed with the textbook backward
   dataflow over the CFG (Aho, Lam, Sethi, Ullman §9.2.5), phi operands live on
   their incoming edge only::

       LiveOut(B) = U_{S in succ(B)} (LiveIn(S) - PhiDefs(S)) u PhiUses(S, B)
       LiveIn(B)  = UEVar(B) u (LiveOut(B) - Def(B))

   iterated to a fixpoint, then a backward walk of each block gives the set
   live *after* each map point (a gc.statepoint call site, a loop stackmap);
3. that set is compared with the map point's (descriptor, value) pairs.

Uses that exist only for the map are not uses: the deopt bundle of a
statepoint, the live operands of a stackmap, and the casts/extracts the
emitter adds to feed them (``mt.spill``, ``mt.lane``, ``mt.field``).  A value
only used by the call itself is not live after it; the call's result comes
back through ``gc.result``, defined after the call, so it is never live across
it.

Every live pointer value must be accounted for, and each omission rule the
pass documents (FORMAT.md §1, llvm_pass/README.md) is accepted only after its
condition is checked here:

* ``value``     a VALUE pair holds it (vectors/literal structs: one pair per
  pointer lane);
* ``derived``   a DERIVED pair (base pair k, offset c) matches it: stripping
  constant-offset GEPs and casts from the value reaches pair k's value with
  offset c (offsets computed here from the data layout);
* ``frame``     a frame address: its underlying object (through GEPs and casts)
  is a static alloca of the entry block (slots carry what is stored there);
* ``static``    it can only point into the binary's static image: every leaf
  through phis, selects, casts and *inbounds* GEPs is a function, a global
  variable that is not thread-local, or null/undef;
* ``interior``  an inbounds GEP with variable indices whose base (stripped of
  inbounds GEPs and casts) is itself accounted for by a pair at this map point;
* ``cursor``    a phi/select all of whose leaves through phis, selects and
  inbounds GEPs are one base accounted for at this map point, that base not
  defined in a CFG cycle (a non-trivial strongly connected component) that
  contains any of the joins walked.

A VALUE pair whose value is not live is accepted only as the base of DERIVED
pairs at the same point (``base``: README, "Derived pointers").  Plain calls
left in instrumented code are accepted when they are intrinsics, inline asm,
musttail calls or calls with operand bundles (counted as unmapped), or tail
calls after which the oracle finds nothing live (``tail``).  Functions the
pass skipped must show the reason it gave (indirectbr, a returns_twice call,
inline asm with memory operands; other reasons are counted as unverified).

Stack slots (static allocas) whose address does not escape get a backward
liveness of their contents (see ``solve_slots``): one into which a pointer is
stored must be a SLOT pair wherever live; one filled only by memcpy is
reported apart (``copied_slot``: the bytes do not say whether they held
pointers). Escaped slots, whose liveness the pass decides with a forward
lifetime analysis, are counted, not checked; every SLOT pair must name a
static alloca.

Calls of returns_twice functions (setjmp): the function returns a second time
when a call made after it longjmps, an edge the CFG does not have.  The oracle
adds it: what is live just after a returns_twice call is used at every call
reachable from it (values and checked slots alike), solved again until nothing
changes; the returns_twice call itself is a plain call (``returns_twice`` in
``plain_calls``).

Integers made by ``ptrtoint`` that are live after a map point are outside the
contract and only counted (``Report.notes``).

Run on whole programs by benchmarks/oracle/run.py; results in
tests/real_programs/ORACLE.md.
"""
from __future__ import annotations

import collections
import dataclasses
import re

import llvmlite.binding as llvm

from .ir import (GEP, Function, Module, bits, has_pointer, instruction_lines, key, line_of, pointer_lanes,
                 split_top)

ROLE_VALUE, ROLE_SLOT, ROLE_DERIVED = 0, 1, 2
ID_MAGIC = 0x4D54
KIND_CALL, KIND_LOOP = 1, 2
_STATEPOINT = "llvm.experimental.gc.statepoint"
_STACKMAP = "llvm.experimental.stackmap"
_MAP_FEEDERS = {"addrspacecast", "extractelement", "extractvalue"}
_NULLISH = {llvm.ValueKind.constant_pointer_null, llvm.ValueKind.undef_value,
            llvm.ValueKind.poison_value, llvm.ValueKind.constant_aggregate_zero}
_INSTR = llvm.ValueKind.instruction
_CEXPR = llvm.ValueKind.constant_expr
_MAX_WALK = 10_000  # every walk over the IR is bounded

#: outcomes for live values that agree with the map, and for recorded pairs
AGREE = ("value", "derived", "frame", "static", "interior", "cursor", "base", "tail", "slot")
#: differences: each one is either a bug of the pass or needs a documented reason
DIFFS = ("missing", "missing_slot", "copied_slot", "extra_value", "extra_derived", "bad_pair", "tail_live", "missing_site",
         "skip_unverified")

_SKIP_WARNING = re.compile(r"mappedtrace: warning: (\S+) not instrumented: (.*)")


#: the fatal functions whose calls carry no map point (llvm_pass/Analysis.cpp, isFatalCall)
FATAL_CALLS = frozenset({"__assert_fail", "__assert_perror_fail", "abort", "__stack_chk_fail",
                         "__fortify_fail", "__chk_fail", "_exit", "_Exit"})


@dataclasses.dataclass
class Difference:
    kind: str
    function: str
    point: str        # "call #3 @malloc" / "loop #0" / "plain call @f"
    line: int | None
    value: str        # the IR of the value concerned
    detail: str = ""

    def __str__(self) -> str:
        where = f"{self.function}:{self.point}" + (f" (line {self.line})" if self.line else "")
        return f"{self.kind}: {where}: {self.value}" + (f" — {self.detail}" if self.detail else "")


@dataclasses.dataclass
class Report:
    """Counts for one module (add reports with ``+``)."""
    functions: int = 0
    instrumented: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    call_sites: int = 0
    loop_points: int = 0
    plain_calls: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    live_values: int = 0
    outcomes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    pairs: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    differences: list[Difference] = dataclasses.field(default_factory=list)
    #: with ``check_module(..., keep_points=True)``: {function: [(point, names of
    #: the values the oracle finds live after it)]}
    points: dict[str, list[tuple[str, frozenset[str]]]] = dataclasses.field(default_factory=dict)
    #: figures outside the contract (integers from ptrtoint live after a point)
    notes: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def diff(self, d: Difference) -> None:
        self.differences.append(d)

    def __add__(self, o: "Report") -> "Report":
        return Report(self.functions + o.functions, self.instrumented + o.instrumented,
                      self.skipped + o.skipped, self.call_sites + o.call_sites,
                      self.loop_points + o.loop_points, self.plain_calls + o.plain_calls,
                      self.live_values + o.live_values, self.outcomes + o.outcomes,
                      self.pairs + o.pairs, self.differences + o.differences,
                      {**self.points, **o.points}, self.notes + o.notes)

    def by_kind(self) -> collections.Counter:
        return collections.Counter(d.kind for d in self.differences)

    def summary(self) -> str:
        agreed = sum(self.outcomes[k] for k in ("value", "derived"))
        omitted = {k: n for k, n in sorted(self.outcomes.items())
                   if k not in ("value", "derived", "base", "tail", "slot") and n}
        return (f"{self.functions} functions ({self.instrumented} instrumented, "
                f"{sum(self.skipped.values())} skipped), {self.call_sites} call sites, "
                f"{self.loop_points} loop points; {self.live_values} live pointer values: "
                f"{agreed} recorded ({self.outcomes['value']} VALUE, {self.outcomes['derived']} DERIVED), "
                f"omitted with a checked reason {dict(omitted)}; recorded dead bases of DERIVED "
                f"pairs {self.outcomes['base']}; live non-escaping slots recorded {self.outcomes['slot']}; "
                f"plain calls {dict(self.plain_calls)}; "
                f"notes {dict(self.notes) or 'none'}; differences {dict(self.by_kind()) or 'none'}")


class _Checker:
    def __init__(self, mod: Module, fn: Function, report: Report, keep_points: bool = False):
        self.mod, self.fn, self.r, self.keep_points = mod, fn, report, keep_points

    # -- value identity and walks ---------------------------------------------------

    def describe(self, k: int) -> str:
        if k in self.fn.insts:
            return self.fn.text(k)[:160]
        for a in self.fn.args:
            if key(a) == k:
                return f"argument {str(a).strip()}"
        return "?"

    def _defined(self, v: llvm.ValueRef) -> tuple[str, list[llvm.ValueRef], str] | None:
        """(opcode, operands, text) of an instruction or constant expression."""
        if v.value_kind == _INSTR:
            k = key(v)
            if k in self.fn.insts:
                return self.fn.opcode[k], self.fn.ops[k], self.fn.text(k)
            return None
        if v.value_kind == _CEXPR:
            # llvmlite lists no operands of a constant expression: its base is
            # read from the text, and only the stripping walks go through it
            t = str(v).strip()
            m = re.match(r"(?:ptr\s+)?(getelementptr|bitcast|addrspacecast)\b(.*)", t)
            base = re.search(r"\bptr (@[-\w.$]+|@\"[^\"]+\"|null)", m.group(2)) if m else None
            ref = self.mod.global_ref(base.group(1)) if base else None
            if ref is None:
                return "constexpr", [], t
            return "constexpr " + m.group(1), [ref], t
        return None

    def gep_offset(self, text: str, ops: list[llvm.ValueRef]) -> int | None:
        """Byte offset of a GEP whose indices are all constants (None otherwise
        or if a type's layout is not known here)."""
        m = GEP.search(text)
        if not m:
            return None
        rest = m.group(2)
        if rest.startswith("("):
            rest = rest[1:]
        ty = split_top(rest)[0]
        idxs = []
        for o in ops[1:]:
            if o.value_kind != llvm.ValueKind.constant_int:
                return None
            idxs.append(o.get_constant_value(signed_int=True))
        if not idxs:
            return 0
        sa = self.mod.layout.size_align(ty)
        if sa is None:
            return None
        off = idxs[0] * sa[0]
        for i in idxs[1:]:
            e = self.mod.layout.element(ty, i)
            if e is None:
                return None
            off += e[0]
            ty = e[1]
        return off

    @staticmethod
    def _inbounds(text: str) -> bool:
        m = GEP.search(text)
        return bool(m) and "inbounds" in m.group(1)

    def strip_constant_offsets(self, v: llvm.ValueRef) -> tuple[int, int | None]:
        """(key of the base, accumulated offset) through constant-index GEPs and
        pointer casts; offset None if a GEP's offset could not be computed."""
        off = 0
        for _ in range(64):
            d = self._defined(v)
            if d is None:
                break
            op, ops, text = d
            if op == "getelementptr":
                o = self.gep_offset(text, ops)
                if o is None:
                    if all(x.value_kind == llvm.ValueKind.constant_int for x in ops[1:]):
                        return key(ops[0]), None
                    break
                off += o
                v = ops[0]
            elif op in ("bitcast", "addrspacecast"):
                v = ops[0]
            else:
                break
        return key(v), off

    def strip_inbounds(self, v: llvm.ValueRef) -> llvm.ValueRef:
        for _ in range(64):
            d = self._defined(v)
            if d is None:
                return v
            op, ops, text = d
            if (op in ("getelementptr", "constexpr getelementptr") and self._inbounds(text)) \
                    or op in ("bitcast", "addrspacecast", "constexpr bitcast", "constexpr addrspacecast"):
                v = ops[0]
            else:
                return v
        return v

    def leaves(self, v: llvm.ValueRef) -> tuple[list[llvm.ValueRef], list[int]] | None:
        """Leaves and joins (phi/select keys) of ``v`` through phis, selects,
        casts and inbounds GEPs, null/undef left out; None past the bound."""
        seen: set[int] = set()
        work, leaves, joins = [v], [], []
        steps = 0
        while work:
            steps += 1
            if steps > _MAX_WALK:
                return None
            x = self.strip_inbounds(work.pop())
            k = key(x)
            if k in seen:
                continue
            seen.add(k)
            if x.value_kind == _INSTR and self.fn.opcode.get(k) == "phi":
                joins.append(k)
                work.extend(self.fn.ops[k])
            elif x.value_kind == _INSTR and self.fn.opcode.get(k) == "select":
                joins.append(k)
                work.extend(self.fn.ops[k][1:3])
            elif x.value_kind not in _NULLISH:
                leaves.append(x)
        return leaves, joins

    def is_frame_address(self, v: llvm.ValueRef) -> str:
        """'frame' if ``v`` is based on a static alloca of the entry block;
        'frame (non-inbounds GEP)' if the way there passes a GEP with a variable
        index that is not inbounds (which may compute any address: the pass's
        rule, getUnderlyingObject, accepts it; counted apart); '' if neither."""
        loose = False
        for _ in range(64):
            d = self._defined(v)
            if d is None:
                return ""
            op, ops, text = d
            if op == "alloca":
                k = key(v)
                ok = (self.fn.block_of.get(k) == 0
                      and ops[0].value_kind == llvm.ValueKind.constant_int)
                return ("frame (non-inbounds GEP)" if loose else "frame") if ok else ""
            if op == "getelementptr":
                loose = loose or (not self._inbounds(text) and any(
                    o.value_kind != llvm.ValueKind.constant_int for o in ops[1:]))
                v = ops[0]
            elif op in ("bitcast", "addrspacecast"):
                v = ops[0]
            else:
                return ""
        return ""

    def is_static_only(self, v: llvm.ValueRef) -> bool:
        if not v.type.is_pointer:
            return False
        lj = self.leaves(v)
        if lj is None:
            return False
        for x in lj[0]:
            if x.value_kind == llvm.ValueKind.function:
                continue
            if x.value_kind == llvm.ValueKind.global_variable and not self.mod.thread_local(x):
                continue
            return False
        return True

    # -- liveness (the reference algorithm) ------------------------------------------

    def solve(self) -> None:
        fn = self.fn
        # map uses: deopt operands of statepoints, live operands of stackmaps
        self.sites: list[tuple[int, str]] = []     # (instruction key, "call"/"loop")
        map_use: dict[int, set[int]] = {}          # instruction key → operand positions
        self.uses_of: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
        users: dict[int, list[tuple[int, bool]]] = collections.defaultdict(list)
        for insts in fn.blocks:
            for i in insts:
                k = key(i)
                name = fn.callee_name(k)
                ops = fn.ops[k]
                if name.startswith(_STATEPOINT):
                    # operands: id, patch bytes, target, #args, flags, args, 0, 0,
                    # the deopt bundle, [normal and unwind blocks of an invoke], callee
                    n = ops[3].get_constant_value()
                    end = len(ops) - (3 if fn.opcode[k] == "invoke" else 1)
                    map_use[k] = set(range(7 + n, end))
                    self.sites.append((k, "call"))
                elif name == _STACKMAP and (ops[0].get_constant_value() >> 48) == ID_MAGIC:
                    map_use[k] = set(range(2, len(ops) - 1))
                    self.sites.append((k, "loop"))
                mu = map_use.get(k, ())
                for pos, o in enumerate(ops):
                    if o.value_kind == _INSTR:
                        users[key(o)].append((k, pos in mu))
                        self.uses_of[key(o)].append((k, pos))
        # the emitter's feeders (mt.spill/mt.lane/mt.field): used by map points only
        self.feeder = {k for k, us in users.items()
                       if fn.opcode.get(k) in _MAP_FEEDERS and all(m for _, m in us)}
        self.map_use = map_use
        # the values: every pointer-holding SSA value
        vals: list[llvm.ValueRef] = []
        idx: dict[int, int] = {}
        for a in fn.args:
            if has_pointer(a.type):
                idx[key(a)] = len(vals)
                vals.append(a)
        for insts in fn.blocks:
            for i in insts:
                k = key(i)
                # (a ptrtoint's integer is tracked too: counted as a note)
                if k not in self.feeder and (has_pointer(i.type) or fn.opcode[k] == "ptrtoint"):
                    idx[k] = len(vals)
                    vals.append(i)
        self.vals, self.idx = vals, idx
        self.ints = sum(1 << j for j, v in enumerate(vals) if not has_pointer(v.type))
        # the longjmp edges: every call reachable from a returns_twice call uses
        # what is live just after it; solved again until nothing changes
        self.longjmp_use: dict[int, int] = {}
        self.returns_twice = [key(i) for insts in fn.blocks for i in insts if self.is_returns_twice(key(i))]
        reach = {s: self.calls_reachable_from(s) for s in self.returns_twice}
        for _round in range(1000):
            self._solve_values()
            changed = False
            for s in self.returns_twice:
                after = self.live_after[s]
                for c in reach[s]:
                    if after & ~self.longjmp_use.get(c, 0):
                        self.longjmp_use[c] = self.longjmp_use.get(c, 0) | after
                        changed = True
            if not changed:
                return
        raise RuntimeError(f"{fn.name}: longjmp edges did not converge")

    def is_returns_twice(self, k: int) -> bool:
        """Is instruction ``k`` a call of a returns_twice function (by the
        callee's attributes or the call's own attribute groups)?"""
        fn = self.fn
        if fn.opcode[k] not in ("call", "invoke"):
            return False
        c = fn.callee(k)
        if c is not None and c.value_kind == llvm.ValueKind.function and "returns_twice" in self.mod.fn_attrs(c):
            return True
        groups = [int(g) for g in re.findall(r" #(\d+)", fn.text(k))]
        return any("returns_twice" in self.mod.attr_groups.get(g, "") for g in groups)

    def is_fatal_call(self, k: int) -> bool:
        """Is instruction ``k`` a direct call of one of the C library's fatal functions
        (declared, not defined, noreturn)?  The pass leaves those plain calls by design
        (llvm_pass/FORMAT.md, "Calls without a map point")."""
        fn = self.fn
        if fn.opcode[k] != "call" or fn.callee_name(k) not in FATAL_CALLS:
            return False
        c = fn.callee(k)
        if c is None or c.value_kind != llvm.ValueKind.function:
            return False
        try:
            f = self.mod.module.get_function(fn.callee_name(k))     # (the callee operand is no function ref)
        except NameError:
            return False
        if not f.is_declaration:
            return False
        groups = [int(g) for g in re.findall(r" #(\d+)", fn.text(k))]
        return "noreturn" in self.mod.fn_attrs(f) or any("noreturn" in self.mod.attr_groups.get(g, "")
                                                         for g in groups)

    def calls_reachable_from(self, s: int) -> set[int]:
        """Calls and invokes (intrinsics left out) that may run after ``s``."""
        fn = self.fn
        b0 = fn.block_of[s]
        insts = fn.blocks[b0]
        pos = [key(i) for i in insts].index(s)
        out = [key(i) for i in insts[pos + 1:]]
        seen: set[int] = set()
        work = list(fn.succs[b0])
        while work:
            b = work.pop()
            if b in seen:
                continue
            seen.add(b)
            out.extend(key(i) for i in fn.blocks[b])
            work.extend(fn.succs[b])
        # (map points that are loop stackmaps are no calls: nothing longjmps from them)
        return {k for k in out if k != s and fn.opcode[k] in ("call", "invoke")
                and (not fn.callee_name(k).startswith("llvm.") or fn.callee_name(k).startswith(_STATEPOINT))}

    def _solve_values(self) -> None:
        fn, idx = self.fn, self.idx
        nb = len(fn.blocks)
        ue, defs, phidefs = [0] * nb, [0] * nb, [0] * nb
        phiuse: dict[tuple[int, int], int] = collections.defaultdict(int)  # (succ, pred) → bits
        for b, insts in enumerate(fn.blocks):
            u = d = p = 0
            for i in insts:
                k = key(i)
                if fn.opcode[k] == "phi":
                    for v, blk in zip(fn.ops[k], i.incoming_blocks):
                        j = idx.get(key(v))
                        if j is not None:
                            phiuse[(b, fn.bindex[key(blk)])] |= 1 << j
                    if k in idx:
                        d |= 1 << idx[k]
                        p |= 1 << idx[k]
                    continue
                u |= self._uses(k) & ~d
                if k in idx:
                    d |= 1 << idx[k]
            ue[b], defs[b], phidefs[b] = u, d, p
        live_in, live_out = list(ue), [0] * nb
        changed, rounds = True, 0
        while changed:
            rounds += 1
            if rounds > 100_000:
                raise RuntimeError(f"{fn.name}: liveness did not converge")
            changed = False
            for b in reversed(range(nb)):
                out = 0
                for s in fn.succs[b]:
                    out |= (live_in[s] & ~phidefs[s]) | phiuse.get((s, b), 0)
                inn = ue[b] | (out & ~defs[b])
                if out != live_out[b] or inn != live_in[b]:
                    live_out[b], live_in[b] = out, inn
                    changed = True
        # live after each instruction of interest
        self.live_after: dict[int, int] = {}
        for b, insts in enumerate(fn.blocks):
            live = live_out[b]
            for i in reversed(insts):
                k = key(i)
                if fn.opcode[k] == "phi":
                    break
                if fn.opcode[k] in ("call", "invoke"):
                    # (a longjmp during the call needs what setjmp's continuation reads)
                    la = live | self.longjmp_use.get(k, 0)
                    self.live_after[k] = la & ~(1 << idx[k]) if k in idx else la
                if k in idx:
                    live &= ~(1 << idx[k])
                live |= self._uses(k)

    def _uses(self, k: int) -> int:
        if k in self.feeder:
            return 0
        mu = self.map_use.get(k, ())
        bits = self.longjmp_use.get(k, 0)
        for pos, o in enumerate(self.fn.ops[k]):
            j = self.idx.get(key(o))
            if j is not None and pos not in mu:
                bits |= 1 << j
        return bits

    # -- stack slots (the subset the oracle can decide) ----------------------------
    #
    # A static alloca whose address never escapes (only loads, stores to it,
    # GEPs/casts of it, memset/memcpy/memmove, lifetime markers, and calls
    # that take it as a captures(none) argument) and into which a pointer is
    # stored (a store of a pointer-typed value): its contents are live after a
    # point if some path reads them
    # (a load, a memcpy source, a call given the address) before a store of
    # the whole slot, a whole-slot memset/memcpy or a lifetime marker. Such a
    # slot must be a SLOT pair wherever its contents are live, and at a call
    # that is given its address. Escaped slots are counted, not checked. A slot
    # only filled by memcpy/memmove may or may not hold pointers (the bytes do
    # not say: Rust's ArcInner<Mutex<u64>> holds none, SQLite's saveBuf holds
    # the saved Parse fields): where it is live and not recorded the
    # difference is ``copied_slot``, to be judged case by case (ORACLE.md).

    def _slot_size(self, k: int) -> int | None:
        rest = self.fn.text(k).split("alloca ", 1)[-1]
        parts = split_top(rest)
        sa = self.mod.layout.size_align(parts[0].replace("inalloca ", ""))
        if sa is None:
            return None
        n = 1
        if len(parts) > 1 and re.fullmatch(r"i\d+ \d+", parts[1]):
            n = int(parts[1].split()[1])
        return sa[0] * n

    def _arg_attrs(self, k: int, pos: int) -> str:
        """The attributes printed before call argument ``pos`` ('' if unknown)."""
        text = self.fn.text(k)
        m = re.search(r"@[-\w.$]+\(|%[-\w.$]+\(", text)
        if not m:
            return ""
        depth, start = 0, m.end()
        for n, ch in enumerate(text[start:], start):
            depth += ch in "([{<"
            if ch in ")]}>":
                if depth == 0:
                    args = split_top(text[start:n])
                    return args[pos] if pos < len(args) else ""
                depth -= 1
        return ""

    def solve_slots(self) -> None:
        fn = self.fn
        self.slot_required: dict[int, set[int]] = {}
        self.slots_checked: list[int] = []
        self.slots_copied: set[int] = set()   # filled by memcpy/memmove only
        site_keys = {k for k, _ in self.sites}
        gen: dict[int, int] = collections.defaultdict(int)     # instruction → slot bits read
        kill: dict[int, int] = collections.defaultdict(int)    # instruction → slot bits overwritten
        callread: dict[int, int] = collections.defaultdict(int)
        for a in (self.fn.blocks[0] if fn.blocks else []):
            ak = key(a)
            if fn.opcode[ak] != "alloca" or self.fn.ops[ak][0].value_kind != llvm.ValueKind.constant_int:
                continue
            size = self._slot_size(ak)
            if size is None or size < 8:
                continue
            bit = 1 << len(self.slots_checked)
            escaped = holds = copied = False
            g, kl, cr = [], [], []
            work, seen = [(ak, True)], set()
            while work and not escaped:
                x, is_base = work.pop()
                if x in seen or len(seen) > 4096:
                    escaped = escaped or len(seen) > 4096
                    continue
                seen.add(x)
                for u, pos in self.uses_of.get(x, ()):
                    op = fn.opcode[u]
                    if pos in self.map_use.get(u, ()):
                        continue
                    if op == "load":
                        g.append(u)
                    elif op == "store":
                        if pos == 0:
                            escaped = True
                            break
                        t = fn.ops[u][0].type
                        holds = holds or has_pointer(t)
                        if is_base and self.mod.layout.td.get_abi_size(t) >= size:
                            kl.append(u)
                    elif op in ("getelementptr", "bitcast", "addrspacecast"):
                        zero = op != "getelementptr" or all(
                            o.value_kind == llvm.ValueKind.constant_int and o.get_constant_value() == 0
                            for o in fn.ops[u][1:])
                        work.append((u, is_base and zero))
                    elif op == "icmp":
                        continue
                    elif op in ("call", "invoke"):
                        name = fn.callee_name(u)
                        if name.startswith(("llvm.lifetime.start", "llvm.lifetime.end")):
                            kl.append(u)
                        elif name.startswith(("llvm.memset", "llvm.memcpy", "llvm.memmove")):
                            if pos == 0:
                                ln = fn.ops[u][2]
                                src_self = name.startswith(("llvm.memcpy", "llvm.memmove")) and \
                                    key(fn.ops[u][1]) == x
                                if is_base and ln.value_kind == llvm.ValueKind.constant_int and \
                                        ln.get_constant_value() >= size and not src_self:
                                    kl.append(u)
                                # a copy in brings pointers if its source has them,
                                # which the bytes do not say: such a slot is checked
                                # apart (``copied_slot``)
                                copied = copied or not name.startswith("llvm.memset")
                            else:
                                g.append(u)
                        elif name.startswith("llvm."):
                            escaped = True   # other intrinsics: not decided here
                            break
                        elif u in site_keys or name:
                            attrs = self._arg_attrs(u, pos)
                            if "captures(none)" not in attrs and "nocapture" not in attrs:
                                escaped = True
                                break
                            cr.append(u)
                        else:
                            escaped = True
                            break
                    else:
                        escaped = True    # phi, select, ptrtoint, ret…: the address escapes
                        break
            if escaped or not (holds or copied):
                self.r.notes["slots not checked (address escapes)" if escaped
                             else "slots not checked (no pointer stored)"] += 1
                continue
            self.slots_checked.append(ak)
            if not holds:
                self.slots_copied.add(ak)
            for u in g:
                gen[u] |= bit
            for u in kl:
                kill[u] |= bit
            for u in cr:
                callread[u] |= bit
                gen[u] |= bit
        if not self.slots_checked:
            return
        nb = len(fn.blocks)
        after_rt: dict[int, int] = {}
        ljs: dict[int, int] = collections.defaultdict(int)   # call → slots read by a longjmp during it
        def walk(b: int, live: int, record: bool) -> int:
            for i in reversed(fn.blocks[b]):
                k = key(i)
                if record and k in site_keys:
                    self.slot_required[k] = live | callread.get(k, 0) | ljs.get(k, 0)
                if record and k in rt:
                    after_rt[k] = live
                live = (live & ~kill.get(k, 0)) | gen.get(k, 0) | ljs.get(k, 0)
            return live
        # the longjmp edges (see solve): slots live after a returns_twice call
        # are read at every call reachable from it
        rt = set(self.returns_twice)
        reach = {s: self.calls_reachable_from(s) for s in rt}
        for _round in range(1000):
            live_in, live_out = [0] * nb, [0] * nb
            changed, rounds = True, 0
            while changed:
                rounds += 1
                if rounds > 100_000:
                    raise RuntimeError(f"{fn.name}: slot liveness did not converge")
                changed = False
                for b in reversed(range(nb)):
                    out = 0
                    for sb in fn.succs[b]:
                        out |= live_in[sb]
                    inn = walk(b, out, False)
                    if out != live_out[b] or inn != live_in[b]:
                        live_out[b], live_in[b] = out, inn
                        changed = True
            for b in range(nb):
                walk(b, live_out[b], True)
            grown = False
            for s in rt:
                for c in reach[s]:
                    if after_rt.get(s, 0) & ~ljs.get(c, 0):
                        ljs[c] |= after_rt[s]
                        grown = True
            if not grown:
                return
        raise RuntimeError(f"{fn.name}: slot longjmp edges did not converge")

    def compare_slots(self, k: int, point: str, line: int | None, recorded: set[int]) -> None:
        if self.fn.block_of[k] not in self.fn.reachable:
            # never executed; the pass solves slot liveness from the entry only
            if self.slot_required.get(k, 0):
                self.r.notes["slot checks skipped: unreachable block"] += 1
            return
        need = self.slot_required.get(k, 0)
        for n, ak in enumerate(self.slots_checked):
            if need >> n & 1:
                if ak in recorded:
                    self.r.outcomes["slot"] += 1
                elif ak in self.slots_copied:
                    self.r.diff(Difference("copied_slot", self.fn.name, point, line, self.describe(ak),
                                           "a slot filled by memcpy, read later, not recorded: "
                                           "a pointer is lost if the copied bytes held one"))
                else:
                    self.r.diff(Difference("missing_slot", self.fn.name, point, line, self.describe(ak),
                                           "a stack slot holding a pointer, read later, not recorded"))
            elif ak in recorded:
                self.r.notes["slot recorded where the oracle finds it dead"] += 1

    # -- comparison ----------------------------------------------------------

    def check(self, skipped_reason: str | None) -> None:
        fn, r = self.fn, self.r
        r.functions += 1
        if skipped_reason is not None:
            r.skipped[skipped_reason] += 1
            why = self.verify_skip(skipped_reason)
            if why:
                r.diff(Difference("skip_unverified", fn.name, "function", None, skipped_reason, why))
            return
        self.solve()
        self.solve_slots()
        if self.sites:
            r.instrumented += 1
        site_keys = {k for k, _ in self.sites}
        seqs = collections.Counter()
        for k, kind in self.sites:
            seqs[kind] += 1
            if kind == "call":
                r.call_sites += 1
                target = fn.ops[k][2]
                point = f"call #{seqs[kind] - 1} @{target.name or '(indirect)'}"
            else:
                r.loop_points += 1
                point = f"loop #{seqs[kind] - 1}"
            self.compare(k, kind, point)
        for insts in fn.blocks:
            for i in insts:
                k = key(i)
                if fn.opcode[k] in ("call", "invoke", "callbr") and k not in site_keys:
                    self.plain_call(k)

    def verify_skip(self, reason: str) -> str:
        """'' if the reason the pass gave for skipping holds in the IR."""
        fn = self.fn
        for insts in fn.blocks:
            for i in insts:
                k = key(i)
                op = fn.opcode[k]
                if "indirectbr" in reason and op == "indirectbr":
                    return ""
                if op not in ("call", "invoke", "callbr"):
                    continue
                if "returns_twice" in reason:
                    c = fn.callee(k)
                    groups = [int(g) for g in re.findall(r" #(\d+)", fn.text(k))]
                    if ((c is not None and c.value_kind == llvm.ValueKind.function
                         and "returns_twice" in self.mod.fn_attrs(c))
                            or any("returns_twice" in self.mod.attr_groups.get(g, "") for g in groups)):
                        return ""
                if "inline asm with memory" in reason:
                    c = fn.callee(k)
                    if c is not None and c.value_kind == llvm.ValueKind.inline_asm:
                        cons = re.search(r'asm[^"]*"(?:[^"\\]|\\.)*", "([^"]*)"', str(c))
                        if cons and re.search(r"(^|,)=?\*", cons.group(1)):
                            return ""
        return "the oracle does not find the reason in the IR"

    def plain_call(self, k: int) -> None:
        fn, r = self.fn, self.r
        c = fn.callee(k)
        text = fn.text(k)
        name = fn.callee_name(k)
        if name.startswith("llvm.experimental.gc.result"):
            return
        if name.startswith("llvm."):
            r.plain_calls["intrinsic"] += 1
            return
        if c is not None and c.value_kind == llvm.ValueKind.inline_asm:
            r.plain_calls["inline asm"] += 1
            return
        if self.is_returns_twice(k):
            # kept plain by design (a statepoint would hide the attribute from
            # the backend); what is live after it is checked at the calls after it
            r.plain_calls["returns_twice"] += 1
            return
        if self.is_fatal_call(k):
            r.plain_calls["fatal (no map point by design)"] += 1
            return
        if re.search(r"\bmusttail call\b", text):
            r.plain_calls["musttail (unmapped)"] += 1
            return
        if re.search(r'\) (#\d+ )?\[ "', text):
            r.plain_calls["operand bundles (unmapped)"] += 1
            return
        live = self.live_after.get(k, 0) & ~self.ints
        point = f"plain call @{name or '(indirect)'}"
        if re.search(r"\btail call\b", text) and fn.opcode[k] == "call":
            if live:
                for j in bits(live):
                    r.diff(Difference("tail_live", fn.name, point, line_of(self.mod, text),
                                      self.describe(key(self.vals[j])),
                                      "live after a tail call the pass left unmapped"))
            else:
                r.plain_calls["tail (nothing live)"] += 1
                r.outcomes["tail"] += 1
            return
        r.diff(Difference("missing_site", fn.name, point, line_of(self.mod, text), text[:160],
                          "a call in an instrumented function without a map point"))

    def compare(self, k: int, kind: str, point: str) -> None:
        fn, r = self.fn, self.r
        ops = fn.ops[k]
        deopt = [ops[p] for p in sorted(self.map_use[k])]
        line = line_of(self.mod, fn.text(k))
        if len(deopt) % 2:
            r.diff(Difference("bad_pair", fn.name, point, line, fn.text(k)[:160], "odd operand count"))
            return
        value_pair: dict[int, int] = {}               # value key → pair index
        lanes: dict[int, set[int]] = collections.defaultdict(set)
        pair_value: dict[int, int] = {}               # pair index → value key (VALUE pairs)
        derived: dict[tuple[int, int], int] = {}      # (base pair, offset) → pair index
        slots_here: set[int] = set()                  # allocas of the SLOT pairs
        for p in range(len(deopt) // 2):
            dv, loc = deopt[2 * p], deopt[2 * p + 1]
            if dv.value_kind != llvm.ValueKind.constant_int:
                r.diff(Difference("bad_pair", fn.name, point, line, str(dv), "descriptor not a constant"))
                continue
            desc = dv.get_constant_value() & (2**64 - 1)
            role, payload = desc >> 62, desc & ((1 << 62) - 1)
            r.pairs[("VALUE", "SLOT", "DERIVED", "reserved")[role]] += 1
            if role == ROLE_VALUE:
                src, lane = loc, None
                lk = key(loc)
                if lk in self.feeder:
                    fop = fn.opcode[lk]
                    src = fn.ops[lk][0]
                    if fop == "extractelement":
                        lane = fn.ops[lk][1].get_constant_value()
                    elif fop == "extractvalue":
                        lane = int(re.search(r", (\d+)\s*(?:,|$)", fn.text(lk)).group(1))
                sk = key(src)
                value_pair[sk] = p
                pair_value[p] = sk
                if lane is not None:
                    lanes[sk].add(lane)
            elif role == ROLE_SLOT:
                slots_here.add(key(loc))
                if not self.is_frame_address(loc) or fn.opcode.get(key(loc)) != "alloca":
                    r.diff(Difference("bad_pair", fn.name, point, line, str(loc).strip()[:160],
                                      "SLOT pair that is not a static alloca"))
            elif role == ROLE_DERIVED:
                if payload not in pair_value or loc.value_kind != llvm.ValueKind.constant_int:
                    r.diff(Difference("bad_pair", fn.name, point, line, f"pair {p}",
                                      f"DERIVED from pair {payload}, which is no earlier VALUE pair"))
                    continue
                derived[(payload, loc.get_constant_value(signed_int=True))] = p
            else:
                r.diff(Difference("bad_pair", fn.name, point, line, f"pair {p}", "reserved role 3"))
        ints = self.live_after[k] & self.ints
        live = self.live_after[k] & ~ints
        live_keys = {key(self.vals[j]) for j in bits(live)}
        if self.keep_points:
            r.points.setdefault(fn.name, []).append(
                (point, frozenset(self.vals[j].name for j in bits(live))))
        used_derived: set[int] = set()
        accounted: dict[int, str] = {}

        def via_derived(v: llvm.ValueRef) -> bool:
            base, off = self.strip_constant_offsets(v)
            if base == key(v) or base not in value_pair:
                return False
            if off is None:  # a layout the oracle cannot compute: any pair from that base
                hits = [q for (bp, _), q in derived.items() if bp == value_pair[base]]
                if hits:
                    used_derived.update(hits)
                    return True
                return False
            q = derived.get((value_pair[base], off))
            if q is None:
                return False
            used_derived.add(q)
            return True

        def reached(v: llvm.ValueRef, depth: int = 0) -> bool:
            """Is v's object reached through a pair of this map point?"""
            vk = key(v)
            if vk in value_pair or via_derived(v):
                return True
            if depth < 4 and vk in live_keys:
                return why_omitted(v, depth + 1) in ("interior", "cursor")
            return False

        def why_omitted(v: llvm.ValueRef, depth: int = 0) -> str | None:
            if f := self.is_frame_address(v):
                return f
            if self.is_static_only(v):
                return "static"
            vk = key(v)
            op = fn.opcode.get(vk)
            # (a GEP with constant indices only must be a DERIVED pair instead)
            if op == "getelementptr" and any(o.value_kind != llvm.ValueKind.constant_int
                                             for o in fn.ops[vk][1:]):
                b = self.strip_inbounds(v)
                if key(b) != vk and reached(b, depth):
                    return "interior"
            if op in ("phi", "select"):
                lj = self.leaves(v)
                if lj and len(lj[0]) == 1 and key(lj[0][0]) != vk:
                    b = lj[0][0]
                    bb = fn.block_of.get(key(b))
                    if (bb is None or not any(fn.in_common_cycle(fn.block_of[j], bb) for j in lj[1])) \
                            and reached(b, depth):
                        return "cursor"
            return None

        for j in bits(ints):
            # outside the contract (a pointer value kept as an integer): noted,
            # with whether the pointer it came from is reached at this point
            src = fn.ops[key(self.vals[j])][0]
            if reached(src):
                r.notes["ptrtoint live, its pointer reached"] += 1
            else:  # only an inttoptr can turn it back into a pointer
                back = any(o == "inttoptr" for o in fn.opcode.values())
                r.notes["ptrtoint live, no inttoptr in the function" if not back
                        else "ptrtoint live, the function has an inttoptr"] += 1
        for j in bits(live):
            v = self.vals[j]
            vk = key(v)
            r.live_values += 1
            if vk in value_pair:
                want = pointer_lanes(v.type)
                if lanes.get(vk) is not None and want is not None and len(lanes[vk]) != want:
                    r.diff(Difference("missing", fn.name, point, line, self.describe(vk),
                                      f"{len(lanes[vk])} of {want} pointer lanes recorded"))
                    continue
                outcome = "value"
            elif via_derived(v):
                outcome = "derived"
            else:
                outcome = why_omitted(v)
            if outcome is None:
                r.diff(Difference("missing", fn.name, point, line, self.describe(vk),
                                  "live after this point, in no pair and under no omission rule"))
                continue
            accounted[vk] = outcome
            r.outcomes[outcome] += 1
        self.compare_slots(k, point, line, slots_here)
        bases = {bp for (bp, _) in derived}
        for vk, p in value_pair.items():
            if vk in live_keys:
                continue
            if p in bases:
                r.outcomes["base"] += 1
                continue
            r.diff(Difference("extra_value", fn.name, point, line, self.describe(vk),
                              "recorded, but not live after this point"))
        for (bp, off), q in derived.items():
            if q not in used_derived:
                r.diff(Difference("extra_derived", fn.name, point, line, f"pair {q}",
                                  f"DERIVED {self.describe(pair_value[bp])[:60]} {off:+d}: no live value is that"))


def skipped_functions(stderr: str) -> dict[str, str]:
    """{function: reason} from the pass's warnings on clang's stderr."""
    return {m.group(1): m.group(2).strip() for m in _SKIP_WARNING.finditer(stderr)}


def check_module(ir_text: str, skipped: dict[str, str] | None = None,
                 keep_points: bool = False) -> Report:
    """Compare every map point of a module printed after the pass with the
    oracle's liveness.

    :param ir_text: textual IR after the pass.
    :param skipped: functions the pass reported as not instrumented, with the
        reason (:func:`skipped_functions` of clang's stderr).
    :param keep_points: also keep, per map point, the names of the values
        found live (:attr:`Report.points`).
    :returns: the counts and every difference.
    """
    mod = Module(ir_text)
    bodies = instruction_lines(ir_text)
    r = Report()
    skipped = skipped or {}
    for f in mod.module.functions:
        if f.is_declaration or "mappedtrace-thunk" in mod.fn_attrs(f):
            continue
        if "available_externally" in str(f.linkage):
            continue
        fn = Function(f, mod, bodies.get(f.name))
        _Checker(mod, fn, r, keep_points).check(skipped.get(f.name))
    return r
