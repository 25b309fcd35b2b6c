"""A small client of the gdb-remote serial protocol (GDB manual, appendix E).

What a tracer needs from ``lldb-server-22 gdbserver`` or ``gdbserver``,
nothing more: ``qSupported``, no-ack mode, thread ids (``qfThreadInfo``),
registers (``g`` after ``Hg``; layout from ``qXfer:features:read:target.xml``),
memory (binary ``x`` where the server has it, else hex ``m``), ``qXfer`` objects
(``auxv``), files through ``vFile:`` (``/proc/PID/maps`` and the binaries),
and ``D`` to detach.  Requests are pipelined (several in flight on the TCP
stream, answered in order), so a read of many blocks costs about one round
trip per window, not per block.

Every wait on the socket is bounded (:attr:`GdbRemote.timeout`): a dropped
link or a dead server gives a :class:`RemoteError` naming the server and what
was asked, never a hang.

Measured on loopback against lldb-server-22 (Debian 12, 2 vCPU), reading
64 MiB: see ``benchmarks/remote/RESULTS.md``.
"""
from __future__ import annotations

import re
import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np

from ..errors import MappedTraceError, TargetFault

#: bound on one reply (a server announcing more is clamped)
MAX_PACKET = 1 << 20
#: requests in flight at once
WINDOW = 8
#: bound on qXfer / vFile continuation rounds (a 1 GiB file in 64 KiB blocks)
MAX_ROUNDS = 1 << 14
#: bound on the registers described by a target.xml (and on its includes)
MAX_REGS = 512
MAX_INCLUDES = 16

_ESC = re.compile(rb"\}(.)", re.S)
_RLE = re.compile(rb"(.)\*(.)", re.S)


class RemoteError(MappedTraceError):
    """The gdb-remote server could not be reached, stopped answering, or refused."""


def checksum(data: bytes) -> bytes:
    return b"%02x" % (sum(data) & 0xFF)


def frame(payload: bytes) -> bytes:
    """``$payload#cs``, with ``$ # } *`` escaped (binary-safe)."""
    esc = re.sub(rb"[$#}*]", lambda m: b"}" + bytes([m[0][0] ^ 0x20]), payload)
    return b"$" + esc + b"#" + checksum(esc)


def unescape(body: bytes) -> bytes:
    """Decode a reply body: ``}x`` escapes and ``c*n`` run-length encoding."""
    data = _unescape_binary(body) if b"*" not in body else None
    if data is not None:
        return data if isinstance(data, bytes) else data.tobytes()
    if b"}" not in body:        # hex replies of gdbserver: run-length encoded only
        return _RLE.sub(lambda m: m[1] * (m[2][0] - 29 + 1), body)
    out = bytearray()           # both: decode in order (rare)
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c == 0x7D and i + 1 < n:
            out.append(body[i + 1] ^ 0x20)
            i += 2
        elif c == 0x2A and out and i + 1 < n:
            out += bytes([out[-1]]) * (body[i + 1] - 29)
            i += 2
        else:
            out.append(c)
            i += 1
    return bytes(out)


def _unescape_binary(body: bytes) -> "bytes | np.ndarray":
    """The ``}x`` escapes of a binary reply decoded (no run-length encoding in it):
    the body itself when it holds none, else a numpy array of the bytes.

    Vectorised (1–2 % of random bytes are escaped; a Python callback per escape
    ran at 14 MB/s): one ``np.delete`` and a scattered XOR, and the caller copies
    the array once, into its own buffer (the client's CPU per byte is measured
    by ``benchmarks/remote/server_rate.py``)."""
    if b"}" not in body:
        return body
    arr = np.frombuffer(body, np.uint8)
    idx = np.flatnonzero(arr == 0x7D)
    if idx[-1] == len(arr) - 1 or np.any(np.diff(idx) == 1):
        # "}}" or a trailing "}": not what a server escapes; decode in order
        return _ESC.sub(lambda m: bytes([m[1][0] ^ 0x20]), body)
    out = np.delete(arr, idx)
    out[idx - np.arange(len(idx))] ^= 0x20
    return out


@dataclass
class RegInfo:
    """One register of the server's register file (from target.xml)."""

    name: str
    regnum: int
    bitsize: int
    offset: int = -1        # byte offset in the ``g`` reply, -1 when not in it


@dataclass
class StopInfo:
    """The ``?`` reply: stop signal and the thread it names."""

    signal: int
    pid: int | None
    tid: int | None
    raw: bytes = b""
    fields: dict = field(default_factory=dict)


def parse_stop(rep: bytes) -> StopInfo:
    """A stop reply (``T``/``S`` signal, ``W``/``X`` exit) as a :class:`StopInfo`;
    ``signal`` is -1 for an exit; ``fields`` holds the ``T`` reply's
    ``key:value`` pairs (expedited registers under their hex register numbers)."""
    r = rep.decode("latin-1")
    if r[:1] in ("W", "X"):
        return StopInfo(-1, None, None, rep, {})
    if r[:1] not in ("T", "S") or len(r) < 3:
        raise RemoteError(f"unexpected stop reply {r[:40]!r}")
    try:
        sig = int(r[1:3], 16)
    except ValueError:
        raise RemoteError(f"unexpected stop reply {r[:40]!r}") from None
    fields = {}
    for kv in r[3:].split(";"):
        if ":" in kv:
            k, v = kv.split(":", 1)
            fields[k] = v
    pid = tid = None
    if "thread" in fields:
        pid, tid = parse_thread_id(fields["thread"])
    return StopInfo(sig, pid, tid, rep, fields)


def parse_thread_id(s: str) -> tuple[int | None, int]:
    """``pPID.TID`` or ``TID`` (hex) → (pid or None, tid)."""
    if s.startswith("p"):
        p, _, t = s[1:].partition(".")
        return int(p, 16), int(t or p, 16)
    return None, int(s, 16)


class GdbRemote:
    """One connection to a gdb-remote server (a context manager).

    :param address: ``HOST:PORT``
    :param timeout: seconds to wait for any reply; a dropped link ends there
    """

    def __init__(self, address: str, *, timeout: float = 10.0, connect_timeout: float = 5.0,
                 fork_events: bool = False):
        self.address = address
        #: ask for ``fork-events+`` (the server then reports a fork of its process and
        #: holds the child: :mod:`.remote_fork`); off otherwise, so that a program's
        #: own forks are not reported to callers that do not expect them
        self.fork_events = fork_events
        self.timeout = timeout
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RemoteError(f"{address!r} is not HOST:PORT", hint="e.g. --remote 10.0.0.2:1234")
        host = host.strip("[]")
        self.bytes_in = 0
        self.bytes_out = 0
        self.round_trips = 0
        self._buf = bytearray()
        self._ack = True
        #: the stream is out of step (an error mid-exchange): no more requests
        self.broken = False
        try:
            self.sock = socket.create_connection((host, int(port)), timeout=connect_timeout)
        except socket.timeout:
            raise RemoteError(f"no answer from {address} within {connect_timeout:g} s",
                              hint="is the server running and the link up?") from None
        except OSError as e:
            raise RemoteError(f"cannot connect to {address}: {e.strerror or e}",
                              hint="start 'lldb-server-22 gdbserver HOST:PORT --attach PID' there") from None
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.features: dict[str, str] = {}
        self.packet_size = 0x4000
        try:
            self._handshake()
        except BaseException:
            self.close()
            raise

    # --- framing ------------------------------------------------------------
    def _send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except socket.timeout:
            self.broken = True
            raise RemoteError(f"{self.address}: the link stopped taking data "
                              f"(nothing sent within {self.timeout:g} s)") from None
        except OSError as e:
            self.broken = True
            raise RemoteError(f"{self.address}: connection lost ({e.strerror or e})") from None
        self.bytes_out += len(data)

    def _fill(self, what: str) -> None:
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            self.broken = True
            raise RemoteError(f"{self.address}: no reply to {what} within {self.timeout:g} s",
                              hint="the link is down or the server hangs") from None
        except OSError as e:
            self.broken = True
            raise RemoteError(f"{self.address}: connection lost during {what} ({e.strerror or e})") from None
        if not chunk:
            self.broken = True
            raise RemoteError(f"{self.address}: the server closed the connection during {what}",
                              hint="the server exited or was killed")
        self.bytes_in += len(chunk)
        self._buf += chunk

    def _recv_packet(self, what: str) -> bytes:
        """The next ``$…#cs`` packet's body (raw, still escaped); acks skipped.

        Bounded: every receive gets data within :attr:`timeout` or raises, and a
        packet longer than twice :data:`MAX_PACKET` raises.
        """
        while True:
            buf = self._buf
            start = buf.find(b"$")
            if start < 0:
                # only acks / noise so far
                del buf[:]
                self._fill(what)
            else:
                end = buf.find(b"#", start)
                if end >= 0 and len(buf) >= end + 3:
                    body = bytes(memoryview(buf)[start + 1:end])     # one copy
                    cs = bytes(buf[end + 1:end + 3])
                    del buf[:end + 3]
                    if self._ack:
                        self._send_raw(b"+" if checksum(body) == cs.lower() else b"-")
                    return body
                if len(buf) - start > MAX_PACKET * 2 + 16:
                    self.broken = True
                    raise RemoteError(f"{self.address}: a reply to {what} exceeds {MAX_PACKET * 2} bytes")
                self._fill(what)

    def request(self, payload: bytes | str) -> bytes:
        """Send one packet, return the decoded reply."""
        return self.pipeline([payload])[0]

    def pipeline(self, payloads: list, raw: bool = False) -> list[bytes]:
        """Send packets with up to :data:`WINDOW` in flight; replies in order
        (decoded, or as they came with ``raw``: escapes left for the caller)."""
        dec = (lambda b: b) if raw else unescape
        if self.broken:
            raise RemoteError(f"{self.address}: the connection failed earlier")
        out: list[bytes] = []
        pend = 0
        enc = [p.encode() if isinstance(p, str) else p for p in payloads]
        for i, p in enumerate(enc):
            self._send_raw(frame(p))
            pend += 1
            if pend >= WINDOW:
                out.append(dec(self._recv_packet(enc[len(out)][:24].decode("latin-1"))))
                pend -= 1
        while pend:
            out.append(dec(self._recv_packet(enc[len(out)][:24].decode("latin-1"))))
            pend -= 1
        self.round_trips += max(1, (len(enc) + WINDOW - 1) // WINDOW)
        return out

    def _handshake(self) -> None:
        self._send_raw(b"+")
        r = self.request("qSupported:multiprocess+;" + ("fork-events+;" if self.fork_events else "")
                         + "xmlRegisters=i386;swbreak+;hwbreak+")
        for item in r.decode("latin-1").split(";"):
            if "=" in item:
                k, v = item.split("=", 1)
                self.features[k] = v
            elif item[-1:] in "+-?" and item:
                self.features[item[:-1]] = item[-1]
        try:
            self.packet_size = max(0x400, min(int(self.features.get("PacketSize", "4000"), 16), MAX_PACKET))
        except ValueError:
            pass
        if self.features.get("QStartNoAckMode") == "+":
            if self.request("QStartNoAckMode") == b"OK":
                self._ack = False

    # --- queries ------------------------------------------------------------
    def stop_reason(self) -> StopInfo:
        r = self.request("?")
        if not r or r[:1] not in b"TS":
            raise RemoteError(f"{self.address}: the server has no stopped process (stop reply {r[:40]!r})",
                              hint="attach it first: lldb-server-22 gdbserver HOST:PORT --attach PID")
        try:
            return parse_stop(r)
        except RemoteError as e:
            raise RemoteError(f"{self.address}: {e.message}") from None

    def process_id(self) -> int | None:
        """The PID of the attached process (``qProcessInfo``, else ``qC``/``?``), or None."""
        r = self.request("qProcessInfo").decode("latin-1")
        for kv in r.split(";"):
            if kv.startswith("pid:"):
                return int(kv[4:], 16)
        r = self.request("qC").decode("latin-1")
        if r.startswith("QC"):
            pid, _ = parse_thread_id(r[2:])
            if pid is not None:
                return pid
        return self.stop_reason().pid

    def thread_ids(self) -> list[int]:
        out: list[int] = []
        r = self.request("qfThreadInfo").decode("latin-1")
        for _ in range(MAX_ROUNDS):
            if not r.startswith("m"):
                break
            out += [parse_thread_id(t)[1] for t in r[1:].split(",") if t]
            r = self.request("qsThreadInfo").decode("latin-1")
        return list(dict.fromkeys(out))

    def xfer(self, obj: str, annex: str = "", limit: int = 64 << 20) -> bytes:
        """A whole ``qXfer:OBJ:read:ANNEX`` object (at most ``limit`` bytes)."""
        out = bytearray()
        step = max(0x100, self.packet_size - 16)
        for _ in range(MAX_ROUNDS):
            r = self.request(f"qXfer:{obj}:read:{annex}:{len(out):x},{step:x}")
            if not r or r[:1] not in b"ml":
                raise RemoteError(f"{self.address}: qXfer:{obj}:read:{annex} refused ({r[:40]!r})")
            out += r[1:]
            if r[:1] == b"l" or len(out) >= limit:
                return bytes(out[:limit])
        raise RemoteError(f"{self.address}: qXfer:{obj} did not end within {MAX_ROUNDS} replies")

    def registers_layout(self) -> list[RegInfo]:
        """The register file from ``target.xml`` (and the files it includes)."""
        regs: list[RegInfo] = []
        todo, seen = ["target.xml"], set()
        nxt = 0
        while todo and len(seen) < MAX_INCLUDES:
            name = todo.pop(0)
            if name in seen:
                continue
            seen.add(name)
            try:
                root = ET.fromstring(self.xfer("features", name, 1 << 20))
            except ET.ParseError as e:
                raise RemoteError(f"{self.address}: {name} is not valid XML ({e})") from None
            for el in root.iter():
                tag = el.tag.rsplit("}", 1)[-1]
                if tag == "include" and el.get("href"):
                    todo.append(el.get("href"))
                elif tag == "reg" and len(regs) < MAX_REGS:
                    n = int(el.get("regnum", nxt))
                    nxt = n + 1
                    if el.get("value_regnums"):     # lldb: a view of another register, not in g
                        continue
                    regs.append(RegInfo(el.get("name", ""), n, int(el.get("bitsize", "64")),
                                        int(el.get("offset", "-1"))))
        regs.sort(key=lambda r: r.regnum)
        if any(r.offset < 0 for r in regs):
            off = 0
            for r in regs:      # gdbserver: g holds the registers in regnum order
                r.offset = off
                off += r.bitsize // 8
        return regs

    def registers(self, tids: list[int], pid: int | None = None) -> list[bytes]:
        """The raw ``g`` replies (bytes) of threads ``tids``, pipelined (``Hg`` then ``g`` each)."""
        mp = pid is not None and self.features.get("multiprocess") == "+"
        reqs = [q for tid in tids for q in (f"Hg{f'p{pid:x}.{tid:x}' if mp else f'{tid:x}'}", "g")]
        reps = self.pipeline(reqs)
        out = []
        for tid, r1, r in zip(tids, reps[0::2], reps[1::2]):
            if r1 != b"OK" or not r or r[:1] == b"E" and len(r) == 3:
                raise RemoteError(f"{self.address}: registers of thread {tid} refused ({r1[:20]!r}, {r[:20]!r})")
            try:
                out.append(bytes.fromhex(r.decode("latin-1").replace("xx", "00")))
            except ValueError:
                raise RemoteError(f"{self.address}: registers of thread {tid}: not hex") from None
        return out

    def thread_id(self, tid: int, pid: int | None = None) -> str:
        """The protocol's id of thread ``tid`` (``pPID.TID`` where multiprocess is granted)."""
        mp = pid is not None and self.features.get("multiprocess") == "+"
        return f"p{pid:x}.{tid:x}" if mp else f"{tid:x}"

    def write_registers(self, tid: int, pid: int | None, raw: bytes) -> None:
        """``Hg`` then ``G``: thread ``tid``'s whole register file (a ``g`` reply's layout).

        :raises RemoteError: refused"""
        r1, r2 = self.pipeline([f"Hg{self.thread_id(tid, pid)}", b"G" + raw.hex().encode()])
        if r1 != b"OK" or r2 != b"OK":
            raise RemoteError(f"{self.address}: writing the registers of thread {tid} refused ({r1[:20]!r}, {r2[:20]!r})")

    def write_memory(self, tid: int, pid: int | None, addr: int, data: bytes) -> None:
        """``Hg`` then hex ``M``: write ``data`` at ``addr`` in the process of thread ``tid``.

        :raises RemoteError: refused"""
        r1, r2 = self.pipeline([f"Hg{self.thread_id(tid, pid)}", f"M{addr:x},{len(data):x}:{data.hex()}"])
        if r1 != b"OK" or r2 != b"OK":
            raise RemoteError(f"{self.address}: writing {len(data)} bytes at {addr:#x} refused ({r2[:20]!r})")

    # --- memory -------------------------------------------------------------
    @property
    def binary_reads(self) -> bool:
        return getattr(self, "_x_ok", None) is not False

    def _probe_x(self, addr: int) -> None:
        if getattr(self, "_x_ok", None) is None:
            r = self.request(f"x{addr:x},1")
            # lldb-server: binary data (or "Exx" at an unreadable address); a server
            # without x answers empty, as to any packet it does not know;
            # gdb 16's gdbserver: 'b' + data
            self._x_ok = bool(r)

    def read_memory(self, ranges: list[tuple[int, int]], out: list) -> list[tuple[int, int]]:
        """Read each ``(addr, size)`` into the matching writable buffer of ``out``.

        Reads are split into blocks of the server's packet size and pipelined.
        :returns: the ``(addr, size)`` blocks that failed (unmapped, refused).
        """
        if not ranges:
            return []
        self._probe_x(ranges[0][0])
        binary = self._x_ok
        step = self.packet_size - 64 if binary else (self.packet_size - 64) // 2
        step = max(0x100, step & ~0xFF)
        reqs, where = [], []
        for (addr, size), buf in zip(ranges, out):
            for off in range(0, size, step):
                n = min(step, size - off)
                reqs.append(f"{'x' if binary else 'm'}{addr + off:x},{n:x}")
                where.append((buf, off, addr + off, n))
        bad = []
        for i in range(0, len(reqs), 256):
            for (buf, off, a, n), r in zip(where[i:i + 256], self.pipeline(reqs[i:i + 256], raw=True)):
                if binary:
                    data = _unescape_binary(r) if b"*" not in r else unescape(r)
                    if len(data) == n + 1 and data[0] == 0x62:      # gdb 16's gdbserver: "b" + data
                        data = data[1:]
                    elif len(data) == 3 and data[0] == 0x45 and n != 3:     # "Exx"
                        data = b""
                else:
                    try:
                        r = unescape(r)
                        data = bytes.fromhex(r.decode("latin-1")) if not r.startswith(b"E") else b""
                    except ValueError:
                        data = b""
                if len(data) != n:
                    bad.append((a, n))
                    continue
                if isinstance(data, np.ndarray):
                    np.frombuffer(buf, np.uint8, n, off)[:] = data      # one copy, no bytes object
                else:
                    memoryview(buf)[off:off + n] = data
        return bad

    def read(self, addr: int, size: int) -> bytes:
        buf = bytearray(size)
        if self.read_memory([(addr, size)], [buf]):
            raise TargetFault(addr, size)
        return bytes(buf)

    # --- files --------------------------------------------------------------
    def file_read(self, path: str, limit: int = 1 << 30) -> bytes:
        """A whole file of the server's machine through ``vFile:`` (at most ``limit`` bytes).

        :raises RemoteError: the server has no file access or refuses the file.
        """
        r = self.request(f"vFile:open:{path.encode().hex()},0,0").decode("latin-1")
        if not r.startswith("F") or r.startswith("F-1"):
            errno = r.split(",")[1] if "," in r else "?"
            raise RemoteError(f"{self.address}: cannot open {path} on the server "
                              f"({'no vFile support' if not r else f'errno {errno}'})")
        fd = int(r[1:].split(";")[0], 16)
        out = bytearray()
        step = max(0x100, (self.packet_size - 64) & ~0xFF)
        try:
            for _ in range(MAX_ROUNDS):
                # a window of preads at once
                offs = [len(out) + i * step for i in range(WINDOW)]
                done = False
                for o, rep in zip(offs, self.pipeline([f"vFile:pread:{fd:x},{step:x},{o:x}" for o in offs])):
                    head, _, data = rep.partition(b";")
                    if not head.startswith(b"F") or head.startswith(b"F-"):
                        raise RemoteError(f"{self.address}: reading {path} on the server failed ({head[:20]!r})")
                    n = int(head[1:], 16)
                    if not done:
                        out += data[:n]
                    if n < step:
                        done = True
                if done or len(out) >= limit:
                    return bytes(out[:limit])
            raise RemoteError(f"{self.address}: {path} is larger than {limit} bytes")
        finally:
            self.request(f"vFile:close:{fd:x}")

    def file_heads(self, paths: list[str], size: int) -> list[bytes | None]:
        """The first ``size`` bytes of each file (None where refused), in three pipelined rounds."""
        opens = self.pipeline([f"vFile:open:{p.encode().hex()},0,0" for p in paths])
        fds = []
        for r in opens:
            head = r.split(b";")[0]
            fds.append(int(head[1:], 16) if head.startswith(b"F") and not head.startswith(b"F-") else None)
        live = [fd for fd in fds if fd is not None]
        reads = dict(zip(live, self.pipeline([f"vFile:pread:{fd:x},{size:x},0" for fd in live])))
        self.pipeline([f"vFile:close:{fd:x}" for fd in live])
        out: list[bytes | None] = []
        for fd in fds:
            head, _, data = reads.get(fd, b"").partition(b";") if fd is not None else (b"", b"", b"")
            ok = head.startswith(b"F") and not head.startswith(b"F-")
            out.append(data[:int(head[1:], 16)] if ok else None)
        return out

    @property
    def server(self) -> str:
        """``"lldb-server"`` or ``"gdbserver"`` (told apart by their ``qSupported`` answers)."""
        return "lldb-server" if "QThreadSuffixSupported" in self.features else "gdbserver"

    def interrupt(self) -> None:
        """Send the out-of-band interrupt (``\\x03``) to a running process.

        lldb-server stops every thread itself (reported as ``SIGSTOP``); gdbserver
        sends ``SIGINT`` to the *process group* of the PID, which fails when the
        process leads no group and would reach every other member of it: callers
        use this with lldb-server only (:attr:`server`).  A server whose process
        is already stopped ignores it."""
        self._send_raw(b"\x03")

    def sync(self) -> None:
        """Drop any stop reply still in flight (a late answer to an interrupt):
        send ``qC`` and read replies until its own (bounded)."""
        self.pipeline_send(b"qC")
        for _ in range(16):
            r = unescape(self._recv_packet("qC"))
            if not r[:1] in (b"T", b"S", b"O"):
                return
        self.broken = True
        raise RemoteError(f"{self.address}: the server keeps sending stop replies")

    def step(self, tid: int, pid: int | None = None, signal: int = 0, timeout: float = 2.0) -> StopInfo:
        """Single-step thread ``tid`` alone (``vCont;s:TID``; ``vCont;S`` hands it
        ``signal`` first), the other threads staying stopped; returns the stop reply.
        Nothing is written into the target: the server uses the trap flag.

        :raises RemoteError: no stop reply within ``timeout``
        """
        mp = pid is not None and self.features.get("multiprocess") == "+"
        th = f"p{pid:x}.{tid:x}" if mp else f"{tid:x}"
        self.pipeline_send((f"vCont;S{signal:02x}:{th}" if signal else f"vCont;s:{th}").encode())
        return parse_stop(self.wait_stop(f"single step of thread {tid}", timeout))

    def resume_until(self, what: str, timeout: float) -> bytes:
        """``vCont;c`` and wait (at most ``timeout`` s) for the stop reply; returns it."""
        self.pipeline_send(b"vCont;c" if self.features.get("vContSupported") == "+" else b"c")
        return self.wait_stop(what, timeout)

    def pipeline_send(self, payload: bytes) -> None:
        if self.broken:
            raise RemoteError(f"{self.address}: the connection failed earlier")
        self._send_raw(frame(payload))

    def wait_stop(self, what: str, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        try:
            return unescape(self._recv_packet(what))
        finally:
            if not self.broken:
                self.sock.settimeout(self.timeout)

    # --- releasing ----------------------------------------------------------
    def detach(self, pid: int | None = None) -> bool:
        """``D``: the server lets the process run on.  True when it said OK."""
        if self.broken:
            self.send_detach_nowait(pid)
            return False
        try:
            r = self.request(f"D;{pid:x}" if pid is not None and self.features.get("multiprocess") == "+" else "D")
        except RemoteError:
            return False
        return r == b"OK"

    def send_detach_nowait(self, pid: int | None = None) -> None:
        """Queue a ``D`` without waiting (the link may be down): TCP keeps trying after we close."""
        p = f"D;{pid:x}" if pid is not None and self.features.get("multiprocess") == "+" else "D"
        try:
            self.sock.setblocking(False)
            self.sock.send(frame(p.encode()))
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "GdbRemote":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
