"""Reading the IR printed after the pass, for the map oracle (test code only):
llvmlite (LLVM 22.1) for functions, blocks, instructions, operands and types;
the printed text where llvmlite's API is thinner (GEP flags, call markers,
constant expressions, attribute groups, debug lines); type sizes and field
offsets from the module's data layout.
"""
from __future__ import annotations

import collections
import ctypes
import re
from typing import Iterable

import llvmlite.binding as llvm

BB = llvm.ValueKind.basic_block
_DILOC = re.compile(r"^!(\d+) = (?:distinct )?!DILocation\(line: (\d+)", re.M)
_ATTR_GROUP = re.compile(r"^attributes #(\d+) = \{(.*)\}$", re.M)


def key(v: llvm.ValueRef) -> int:
    return ctypes.cast(v._ptr, ctypes.c_void_p).value


# -- types --------------------------------------------------------------------

def has_pointer(t: llvm.TypeRef, depth: int = 0) -> bool:
    if depth > 16:
        return True
    if t.is_pointer:
        return True
    if t.is_vector or t.is_array or t.is_struct:
        return any(has_pointer(e, depth + 1) for e in t.elements)
    return False


_SCALAR_SIZE = {"half": 2, "bfloat": 2, "float": 4, "double": 8, "x86_fp80": 16, "fp128": 16, "ptr": 8}


def split_top(s: str) -> list[str]:
    """Split a type list at top-level commas."""
    out, depth, cur = [], 0, []
    for ch in s:
        if ch in "[{<(":
            depth += 1
        elif ch in "]}>)":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


class Layout:
    """Sizes and field offsets of IR types given as text (a GEP's source
    element type); named structs through the module's data layout."""

    def __init__(self, module: llvm.ModuleRef):
        self.module = module
        self.td = llvm.create_target_data(module.data_layout)

    def _named(self, name: str) -> llvm.TypeRef | None:
        try:
            return self.module.get_struct_type(name)
        except NameError:
            return None

    def size_align(self, t: str) -> tuple[int, int] | None:
        t = t.strip()
        if m := re.fullmatch(r"i(\d+)", t):
            bits = int(m.group(1))
            size = 1 << max(0, (bits - 1).bit_length() - 3) if bits > 8 else 1
            return size, min(size, 16)
        if t in _SCALAR_SIZE or t.startswith("ptr"):
            s = _SCALAR_SIZE.get(t, 8)
            return s, s
        if m := re.fullmatch(r"\[(\d+) x (.*)\]", t):
            e = self.size_align(m.group(2))
            return (int(m.group(1)) * e[0], e[1]) if e else None
        if t.startswith("%"):
            nt = self._named(t[1:].strip('"'))
            if nt is None:
                return None
            return self.td.get_abi_size(nt), self.td.get_abi_alignment(nt)
        if t.startswith("{") or t.startswith("<{"):
            offs = self.field_offsets(t)
            return None if offs is None else (offs[1], offs[2])
        return None  # vectors and the rest: left unverified

    def field_offsets(self, t: str) -> tuple[list[int], int, int] | None:
        """(offsets of the fields, size, alignment) of a literal struct."""
        packed = t.startswith("<{")
        inner = t[2:-2] if packed else t[1:-1]
        offs, pos, align = [], 0, 1
        for f in split_top(inner):
            sa = self.size_align(f)
            if sa is None:
                return None
            a = 1 if packed else sa[1]
            pos = (pos + a - 1) // a * a
            offs.append(pos)
            pos += sa[0]
            align = max(align, a)
        return offs, (pos + align - 1) // align * align, align

    def element(self, t: str, idx: int) -> tuple[int, str] | None:
        """(byte offset, type) of field/element ``idx`` of aggregate ``t``."""
        t = t.strip()
        if m := re.fullmatch(r"\[(\d+) x (.*)\]", t):
            e = self.size_align(m.group(2))
            return (idx * e[0], m.group(2)) if e else None
        if t.startswith("%"):
            nt = self._named(t[1:].strip('"'))
            if nt is None:
                return None
            elems = list(nt.elements)
            return self.td.get_element_offset(nt, idx), str(elems[idx])
        if t.startswith("{") or t.startswith("<{"):
            offs = self.field_offsets(t)
            inner = t[2:-2] if t.startswith("<{") else t[1:-1]
            return (offs[0][idx], split_top(inner)[idx]) if offs else None
        return None


# -- one function -----------------------------------------------------------

GEP = re.compile(r"getelementptr\s+((?:(?:inbounds|nuw|nusw|inrange\([^)]*\))\s+)*)(.*)")


class Function:
    """The IR facts of one function the oracle needs, read once through llvmlite."""

    def __init__(self, fn: llvm.ValueRef, mod: "Module", lines: list[str] | None = None):
        self.ref, self.mod, self.name = fn, mod, fn.name
        self.blocks: list[list[llvm.ValueRef]] = []
        self.block_of: dict[int, int] = {}       # value key → block index
        self.insts: dict[int, llvm.ValueRef] = {}
        self.opcode: dict[int, str] = {}
        self.ops: dict[int, list[llvm.ValueRef]] = {}
        self._text: dict[int, str] = {}
        bkeys, order = [], []
        for bi, b in enumerate(fn.blocks):
            bkeys.append(key(b))
            insts = list(b.instructions)
            self.blocks.append(insts)
            for i in insts:
                k = key(i)
                order.append(k)
                self.insts[k], self.block_of[k] = i, bi
                self.opcode[k] = i.opcode
                self.ops[k] = list(i.operands)
        # An instruction's text: its line of the printed function when the
        # lines and instructions pair up one to one (str() of a ValueRef
        # numbers the whole function each time: milliseconds per call).
        if lines is not None and len(lines) == len(order) and all(
                self._line_matches(lines[n], self.opcode[k]) for n, k in enumerate(order)):
            self._text.update(zip(order, (ln.strip() for ln in lines)))
        self.bindex = {k: i for i, k in enumerate(bkeys)}
        self.succs = [[self.bindex[key(o)] for o in self.ops[key(insts[-1])] if o.value_kind == BB]
                      if insts else [] for insts in self.blocks]
        self.args = list(fn.arguments)
        self._scc: list[int] | None = None
        self.reachable = {0} if self.blocks else set()
        work = list(self.reachable)
        while work:
            for t in self.succs[work.pop()]:
                if t not in self.reachable:
                    self.reachable.add(t)
                    work.append(t)

    @staticmethod
    def _line_matches(line: str, opcode: str) -> bool:
        m = re.match(r"\s*(?:%[-\w.$\"]+ = )?(?:(?:tail|musttail|notail) )?(\w+)", line)
        return bool(m) and (m.group(1) == opcode or opcode in ("fneg", "freeze"))

    def text(self, k: int) -> str:
        if k not in self._text:
            self._text[k] = str(self.insts[k]).strip()
        return self._text[k]

    def callee(self, k: int) -> llvm.ValueRef | None:
        return self.ops[k][-1] if self.opcode[k] in ("call", "invoke", "callbr") else None

    def callee_name(self, k: int) -> str:
        c = self.callee(k)
        return c.name if c is not None and c.value_kind == llvm.ValueKind.function else ""

    # SCCs of the CFG (Tarjan, iterative): a cycle contains both a and b iff
    # they are in one non-trivial SCC.
    def scc(self) -> list[int]:
        if self._scc is not None:
            return self._scc
        n = len(self.blocks)
        index, low, comp = [-1] * n, [0] * n, [-1] * n
        onstack, stack, counter, ncomp = [False] * n, [], 0, 0
        for root in range(n):
            if index[root] >= 0:
                continue
            work = [(root, 0)]
            while work:
                v, i = work.pop()
                if i == 0:
                    index[v] = low[v] = counter
                    counter += 1
                    stack.append(v)
                    onstack[v] = True
                recurse = False
                succ = self.succs[v]
                while i < len(succ):
                    w = succ[i]
                    i += 1
                    if index[w] < 0:
                        work.append((v, i))
                        work.append((w, 0))
                        recurse = True
                        break
                    if onstack[w]:
                        low[v] = min(low[v], index[w])
                if recurse:
                    continue
                if low[v] == index[v]:
                    while True:
                        w = stack.pop()
                        onstack[w] = False
                        comp[w] = ncomp
                        if w == v:
                            break
                    ncomp += 1
                if work:
                    u = work[-1][0]
                    low[u] = min(low[u], low[v])
        sizes = collections.Counter(comp)
        self._nontrivial = {c for c, s in sizes.items() if s > 1} | {
            comp[b] for b in range(n) if b in self.succs[b]}
        self._scc = comp
        return comp

    def in_common_cycle(self, a: int, b: int) -> bool:
        comp = self.scc()
        return comp[a] == comp[b] and comp[a] in self._nontrivial


# -- the module ---------------------------------------------------------------

class Module:
    def __init__(self, text: str):
        self.text = text
        self.module = llvm.parse_assembly(text)
        self.layout = Layout(self.module)
        self.lines = {int(a): int(b) for a, b in _DILOC.findall(text)}
        self.attr_groups = {int(a): b for a, b in _ATTR_GROUP.findall(text)}
        self._tls: dict[int, bool] = {}
        self._globals: dict[str, llvm.ValueRef] | None = None

    def thread_local(self, g: llvm.ValueRef) -> bool:
        k = key(g)
        if k not in self._tls:
            head = str(g).split("=", 1)[-1][:200]
            self._tls[k] = "thread_local" in head
        return self._tls[k]

    def global_ref(self, name: str) -> llvm.ValueRef | None:
        """The function or global variable ``@name`` (None for null and unknowns)."""
        if name == "null":
            return None
        if self._globals is None:  # (get_global_variable does not find internal ones)
            self._globals = {g.name: g for g in self.module.global_variables}
            self._globals.update((f.name, f) for f in self.module.functions)
        return self._globals.get(name[1:].strip('"'))

    def fn_attrs(self, f: llvm.ValueRef) -> str:
        return " ".join(a.decode() if isinstance(a, bytes) else str(a) for a in f.attributes)


def line_of(mod: Module, text: str) -> int | None:
    m = re.search(r"!dbg !(\d+)", text)
    return mod.lines.get(int(m.group(1))) if m else None


def bits(x: int) -> Iterable[int]:
    while x:
        low = x & -x
        yield low.bit_length() - 1
        x ^= low


def pointer_lanes(t: llvm.TypeRef, depth: int = 0) -> int | None:
    """Pointers held in an aggregate SSA value, nested ones included."""
    if t.is_pointer:
        return None if depth == 0 else 1
    if depth > 8:
        return 0
    if t.is_vector or t.is_array:
        e = next(iter(t.elements))
        return t.element_count * (pointer_lanes(e, depth + 1) or 0)
    if t.is_struct:
        return sum(pointer_lanes(e, depth + 1) or 0 for e in t.elements)
    return None


_DEFINE = re.compile(r'^define [^@]*@("(?:[^"\\]|\\.)*"|[-\w.$]+)\(', re.M)
_INST_LINE = re.compile(r"^  (?:%|[a-z])")


def instruction_lines(ir_text: str) -> dict[str, list[str]]:
    """{function: the lines of its body that start an instruction}"""
    out = {}
    for m in _DEFINE.finditer(ir_text):
        end = ir_text.find("\n}\n", m.end())
        body = ir_text[ir_text.find("\n", m.end()) + 1:end]
        out[m.group(1).strip('"')] = [ln for ln in body.split("\n") if _INST_LINE.match(ln)]
    return out
