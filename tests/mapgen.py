"""Encoders of ``.llvm_stackmaps`` (StackMap v3) and ``.mtmap`` blobs, for tests.

Written from the specs (LLVM's StackMaps.html, ``llvm_pass/FORMAT.md``), not
from the decoders, so the decoders are checked against an independent
writer.  Tests build valid blobs here, then truncate or corrupt them.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOC_KIND = {"Register": 1, "Direct": 2, "Indirect": 3, "Constant": 4, "ConstantIndex": 5}


def mt_id(kind: str, seq: int, relative_fn: bool = False) -> int:
    """A MappedTrace record ID: tag 0x4D54, kind 1 call / 2 loop, bit 39 when its
    function entry's address is relative to the table, sequence."""
    return (0x4D54 << 48) | ({"call": 1, "loop": 2}[kind] << 40) | (int(relative_fn) << 39) | \
        (seq & ((1 << 39) - 1))


def descriptor(role: str, type_id: int) -> int:
    """A FORMAT.md §1 descriptor; for ``derived`` the ``type_id`` is the base's pair index."""
    return ({"value": 0, "slot": 1, "derived": 2, "reserved3": 3}[role] << 62) | type_id


# ---------------------------------------------------------------- stack maps

@dataclass
class Rec:
    id: int
    offset: int
    locations: list[tuple[str, int, int, int]]       # (kind, size, dwarf reg, offset/const/index)
    live_outs: list[tuple[int, int]] = field(default_factory=list)
    flags: int = 0


@dataclass
class Fn:
    address: int
    stack_size: int
    records: list[Rec]


def const_loc(value: int, constants: list[int]) -> tuple[str, int, int, int]:
    """A Constant location if ``value`` fits in i32 (as LLVM does), else ConstantIndex."""
    v = value if value < (1 << 63) else value - (1 << 64)
    if -(1 << 31) <= v < (1 << 31):
        return ("Constant", 8, 0, v)
    if value not in constants:
        constants.append(value)
    return ("ConstantIndex", 8, 0, constants.index(value))


def statepoint_locs(pairs: list[tuple[int, tuple[str, int, int, int]]], constants: list[int],
                    gc: list[tuple[str, int, int, int]] = ()) -> list[tuple[str, int, int, int]]:
    """cc, flags, #deopt header then (descriptor, location) pairs, then ``gc`` locations."""
    ops: list[tuple[str, int, int, int]] = []
    for desc, loc in pairs:
        ops.append(const_loc(desc, constants))
        ops.append(loc)
    return [("Constant", 8, 0, 0), ("Constant", 8, 0, 0), ("Constant", 8, 0, len(ops))] + ops + list(gc)


def encode_table(functions: list[Fn], constants: list[int], version: int = 3,
                 nrecords: int | None = None) -> bytes:
    recs = [r for f in functions for r in f.records]
    out = bytearray(struct.pack("<BBHIII", version, 0, 0, len(functions), len(constants),
                                len(recs) if nrecords is None else nrecords))
    for f in functions:
        out += struct.pack("<QQQ", f.address, f.stack_size, len(f.records))
    for c in constants:
        out += struct.pack("<Q", c)
    for r in recs:
        out += struct.pack("<QIHH", r.id, r.offset, r.flags, len(r.locations))
        for kind, size, reg, off in r.locations:
            out += struct.pack("<BBHHHi", LOC_KIND.get(kind, kind) if isinstance(kind, str) else kind,
                               0, size, reg, 0, off)
        out += bytes((-len(out)) % 8)
        out += struct.pack("<HH", 0, len(r.live_outs))
        for reg, size in r.live_outs:
            out += struct.pack("<HBB", reg, 0, size)
        out += bytes((-len(out)) % 8)
    return bytes(out)


def concat(blocks: list[bytes], extra_pad: int = 0) -> bytes:
    """Blocks joined like a linker does: zero padding to 8 bytes (plus ``extra_pad`` zero words)."""
    out = bytearray()
    for b in blocks:
        out += bytes((-len(out)) % 8)
        if out:
            out += bytes(8 * extra_pad)
        out += b
    return bytes(out)


# -------------------------------------------------------------------- .mtmap

@dataclass
class MSlot:
    offset: int
    target: int = 0
    count: int = 1
    stride: int = 0
    flags: int = 0


@dataclass
class MType:
    id: int
    name: str
    size: int
    kind: int = 3
    flags: int = 0
    slots: list[MSlot] = field(default_factory=list)
    elem_type: int = 0
    flex_offset: int = 0
    #: (offset, type id, name, flags) per field (written in version 2 chunks only)
    fields: list[tuple] = field(default_factory=list)


@dataclass
class MAlloca:
    name: str
    type_id: int
    size: int


@dataclass
class MFunc:
    name: str
    address: int
    status: int = 0
    reason: str = ""
    n_callsites: int = 0
    n_loop_points: int = 0
    n_unmapped_calls: int = 0
    allocas: list[MAlloca] = field(default_factory=list)
    flags: int = 0          # version 2: 0x1 the address is absolute


@dataclass
class MGlobal:
    name: str
    address: int
    size: int
    type_id: int
    flags: int = 0


class _Strtab:
    def __init__(self) -> None:
        self.data = bytearray(b"\0")
        self.index: dict[str, int] = {"": 0}

    def add(self, s: str) -> int:
        if s not in self.index:
            self.index[s] = len(self.data)
            self.data += s.encode() + b"\0"
        return self.index[s]


def encode_chunk(module: str, types: list[MType] = (), functions: list[MFunc] = (),
                 globals_: list[MGlobal] = (), flags: int = 0, version: int = 1,
                 magic: bytes = b"MTMP", header_size: int = 56) -> bytes:
    """One ``.mtmap`` chunk laid out header, types, functions, globals, strings."""
    st = _Strtab()
    modname = st.add(module)
    tbytes = bytearray()
    for t in types:
        fields = list(getattr(t, "fields", ())) if version >= 2 else []
        tbytes += struct.pack("<QQIBBHIIQQ", t.id, t.size, st.add(t.name), t.kind, 0, t.flags,
                              len(t.slots), len(fields), t.elem_type, t.flex_offset)
        for s in t.slots:
            tbytes += struct.pack("<QQIIII", s.offset, s.target, s.count, s.stride, s.flags, 0)
        for fo, ft, fname, fflags in fields:          # (offset, type id, name, flags), version 2
            tbytes += struct.pack("<QQII", fo, ft, st.add(fname), fflags)
    fbytes = bytearray()
    for f in functions:
        fbytes += struct.pack("<QIIHHIIIII", f.address, st.add(f.name), st.add(f.reason), f.status, f.flags,
                              f.n_callsites, f.n_loop_points, f.n_unmapped_calls, len(f.allocas), 0)
        for a in f.allocas:
            fbytes += struct.pack("<QQII", a.type_id, a.size, st.add(a.name), 0)
    gbytes = bytearray()
    for g in globals_:
        gbytes += struct.pack("<QQQII", g.address, g.size, g.type_id, st.add(g.name), g.flags)
    types_off = header_size
    fun_off = types_off + len(tbytes)
    glob_off = fun_off + len(fbytes)
    str_off = glob_off + len(gbytes)
    body = bytes(tbytes + fbytes + gbytes + st.data)
    size = header_size + len(body)
    size += (-size) % 8
    hdr = struct.pack("<4sHHIIIIIIIIIIII", magic, version, header_size, size, flags, len(types),
                      len(functions), len(globals_), len(st.data), types_off, fun_off, glob_off,
                      str_off, modname, 0)
    hdr += bytes(header_size - 56)
    out = hdr + body
    return out + bytes(size - len(out))


# ------------------------------------------------------------------ toolchain

def tool(name: str) -> str | None:
    p = shutil.which(name)
    if p:
        return p
    cand = f"/usr/lib/llvm-22/bin/{name.rsplit('-22', 1)[0]}"
    return cand if os.access(cand, os.X_OK) else None


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


# ------------------------------------------------------- llvm-readobj oracle

def parse_readobj_stackmap(text: str) -> dict:
    """Parse ``llvm-readobj-22 --stackmap`` output (one table) into plain data:
    ``{"functions": [(addr, stack, count)], "constants": [..], "records":
    [(id, offset, [(kind, size, reg, offset_or_value)], [(reg, size)])]}``.
    ConstantIndex locations carry the constant's value, as the decoder's do."""
    import re
    out: dict = {"functions": [], "constants": [], "records": []}
    fn = re.compile(r"Function address: (\d+), stack size: (\d+), callsite record count: (\d+)")
    const = re.compile(r"^\s+#(\d+): (\d+)$")
    rec = re.compile(r"Record ID: (\d+), instruction offset: (\d+)")
    loc = re.compile(r"^\s+#\d+: (Register|Direct|Indirect|Constant|ConstantIndex) (.*), size: (\d+)$")
    live = re.compile(r"(\d+) live-outs: \[ (.*)\]")
    in_records = False
    for line in text.splitlines():
        if "Num Records" in line:
            in_records = True
        m = fn.search(line)
        if m:
            out["functions"].append(tuple(int(x) for x in m.groups()))
            continue
        m = rec.search(line)
        if m:
            out["records"].append((int(m.group(1)), int(m.group(2)), [], []))
            continue
        m = loc.match(line)
        if m and in_records:
            kind, body, size = m.group(1), m.group(2), int(m.group(3))
            if kind == "Register":
                reg, off = int(re.match(r"R#(\d+)", body).group(1)), 0
            elif kind == "Direct":
                g = re.match(r"R#(\d+) \+ (-?\d+)", body)
                reg, off = int(g.group(1)), int(g.group(2))
            elif kind == "Indirect":
                g = re.match(r"\[R#(\d+) \+ (-?\d+)\]", body)
                reg, off = int(g.group(1)), int(g.group(2))
            elif kind == "Constant":
                reg, off = 0, int(body)
            else:
                reg, off = 0, int(re.match(r"#\d+ \((\d+)\)", body).group(1))
            out["records"][-1][2].append((kind, size, reg, off))
            continue
        m = const.match(line)
        if m and not in_records:
            out["constants"].append(int(m.group(2)))
            continue
        m = live.search(line)
        if m and in_records:
            out["records"][-1][3].extend((int(r), int(s)) for r, s in re.findall(r"R#(\d+) \((\d+)-bytes\)", m.group(2)))
    return out


def readobj_table(table_bytes: bytes, workdir: Path, name: str = "t") -> dict:
    """Wrap one table in an ELF object (llvm-objcopy -I binary) and parse
    what llvm-readobj-22 --stackmap says about it (readobj reads only the
    first table of a section, so tables are checked one at a time)."""
    raw = workdir / f"{name}.bin"
    obj = workdir / f"{name}.o"
    raw.write_bytes(table_bytes)
    run([tool("llvm-objcopy-22"), "-I", "binary", "-O", "elf64-x86-64",
         "--rename-section", ".data=.llvm_stackmaps", str(raw), str(obj)])
    return parse_readobj_stackmap(run([tool("llvm-readobj-22"), "--stackmap", str(obj)]).stdout)


def decoded_table_as_readobj(t) -> dict:
    """A decoded :class:`StackMapTable` in :func:`parse_readobj_stackmap`'s shape."""
    return {"functions": [(f.address, f.stack_size, f.record_count) for f in t.functions],
            "constants": list(t.constants),
            "records": [(r.id, r.instruction_offset,
                         [(l.kind, l.size, l.dwarf_reg, l.offset) for l in r.locations],
                         [(lo.dwarf_reg, lo.size) for lo in r.live_outs]) for r in t.records]}


# ------------------------------------------------------ a binary with maps

SAMPLE_MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
struct node { long v; struct node *next; };
struct node *kept;
_Thread_local struct node *tls_node;
_Thread_local long tls_pad[3];
void consume(void *p) { if (p) printf("%p\n", p); }
__attribute__((noinline)) long plain_c(long x) { return x * 3; }
int main(void) {
    kept = malloc(sizeof *kept);
    tls_node = kept;
    return (int)plain_c(0);
}
"""


def build_sample_binary(d: Path) -> dict:
    """A non-PIE binary: llc-22 output of stackmap_inputs/statepoint_basic.ll
    linked with :data:`SAMPLE_MAIN`, plus a generated ``.mtmap`` (added with
    llvm-objcopy-22) whose addresses come from the binary's symbols.

    :returns: ``{"dir", "exe" (no .mtmap), "full" (with it), "syms", "obj"}``
    """
    from mappedtrace.formats import elf
    llc, clang, objcopy = tool("llc-22"), tool("clang-22"), tool("llvm-objcopy-22")
    obj = d / "sb.o"
    run([llc, "-O2", "-filetype=obj", str(REPO / "tests/stackmap_inputs/statepoint_basic.ll"), "-o", str(obj)])
    src = d / "main.c"
    src.write_text(SAMPLE_MAIN)
    exe = d / "prog"
    run([clang, "-O1", "-g", "-no-pie", "-fno-pie", "-Wl,--build-id", "-o", str(exe), str(src), str(obj)])
    syms = {s.name: s for s in elf.symbols(str(exe))}
    node, weird = 0x1111, 0x2222
    chunk = encode_chunk(
        "prog", [MType(node, "struct node", 16, slots=[MSlot(8, node)]),
                 MType(weird, "struct [weird] name", 8, slots=[MSlot(0, 0, flags=1)])],
        [MFunc("two_calls", syms["two_calls"].addr, 0, "", 2, 0, 0, [MAlloca("slot", node, 32)]),
         MFunc("loop", syms["loop"].addr, 0, "", 0, 1, 0),
         MFunc("main", syms["main"].addr, 1, "uses setjmp", 0, 0, 0)],
        [MGlobal("kept", syms["kept"].addr, 8, node), MGlobal("tls_node", 0, 8, node, flags=1),
         MGlobal("tls_missing", 0, 8, node, flags=1)])
    (d / "mtmap.bin").write_bytes(chunk)
    full = d / "prog_mt"
    run([objcopy, "--add-section", f".mtmap={d / 'mtmap.bin'}", str(exe), str(full)])
    return {"dir": d, "exe": str(exe), "full": str(full), "syms": syms, "obj": str(obj)}


def replace_section(binary: str, name: str, data: bytes, out: Path) -> Path:
    """A copy of ``binary`` whose section ``name`` holds ``data`` (same size or not)."""
    blob = out.with_suffix(".sec")
    blob.write_bytes(data)
    run([tool("llvm-objcopy-22"), "--update-section", f"{name}={blob}", binary, str(out)])
    return out
