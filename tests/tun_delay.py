"""A link with real propagation delay where the kernel has no ``sch_netem``.

Usage (root, in the namespace between the two ends)::

    python tests/tun_delay.py DEV_A DEV_B ONE_WAY_US

Creates two TUN devices ``DEV_A`` and ``DEV_B`` (layer 3, no packet info),
prints ``ready`` and then forwards every IP packet read from one to the other,
each held ``ONE_WAY_US`` microseconds (first in, first out, as on a wire), until
its standard input closes or it gets SIGTERM; the devices vanish with it.  A
line on its standard input holding a number sets a new hold (µs), so a caller
can calibrate the measured round trip without rebuilding the link.  The
caller moves each device into one end's namespace (``ip link set DEV netns NS``:
a TUN device keeps its file descriptor when moved) and gives the two ends
point-to-point addresses, so TCP between them runs end to end over the held
packets — its own round-trip estimate, windows and retransmissions see the
delay, unlike a TCP relay that would split the connection.  Rate limits go on
the devices' egress with ``tc … tbf``.

What this is not: a delay applied in the kernel.  Each packet costs a read and
a write in this process (about 10–20 µs of CPU on the test machine), and the
hold is a ``clock_nanosleep`` with 1 ns timer slack, so under load the actual
delay is ONE_WAY_US plus scheduling latency: measure the round trip (``ping``
crosses it) and report that.  At most :data:`QUEUE` packets wait in each
direction (a link buffer); more are dropped, as a full queue drops them.
"""
from __future__ import annotations

import collections
import ctypes
import fcntl
import os
import signal
import struct
import sys
import threading
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
PR_SET_TIMERSLACK = 29
#: bound on packets held per direction
QUEUE = 4096
#: the largest packet a TUN read returns (its MTU is set by the caller, at most 65535)
MAX_PACKET = 65536 + 64


def open_tun(name: str) -> int:
    """A file descriptor of the TUN device ``name`` (created now, in this namespace)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


class Direction:
    """One way of the link: packets read from ``src``, written to ``dst`` ``delay_ns`` later."""

    def __init__(self, src: int, dst: int, delay_ns: int):
        self.src, self.dst, self.delay_ns = src, dst, delay_ns
        self.q: collections.deque = collections.deque()
        self.cv = threading.Condition()
        self.dropped = 0

    def reader(self) -> None:
        while True:
            try:
                pkt = os.read(self.src, MAX_PACKET)
            except OSError:
                return
            due = time.monotonic_ns() + self.delay_ns
            with self.cv:
                if len(self.q) >= QUEUE:
                    self.dropped += 1
                    continue
                self.q.append((due, pkt))
                self.cv.notify()

    def writer(self) -> None:
        while True:
            with self.cv:
                while not self.q:
                    self.cv.wait()
                due, pkt = self.q.popleft()
            wait = due - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            try:
                os.write(self.dst, pkt)
            except OSError:
                pass        # the device is down or gone: the packet is lost, as on a wire


def main() -> int:
    if len(sys.argv) != 4 or not sys.argv[3].isdigit():
        print("usage: tun_delay.py DEV_A DEV_B ONE_WAY_US", file=sys.stderr)
        return 2
    a_name, b_name, us = sys.argv[1], sys.argv[2], int(sys.argv[3])
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    try:
        a, b = open_tun(a_name), open_tun(b_name)
    except OSError as e:
        print(f"tun_delay: cannot create TUN devices: {e.strerror}", file=sys.stderr)
        return 1
    dirs = (Direction(a, b, us * 1000), Direction(b, a, us * 1000))
    for d in dirs:
        for fn in (d.reader, d.writer):
            threading.Thread(target=fn, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print("ready", flush=True)
    for line in sys.stdin:      # until the caller closes our stdin (or dies)
        if line.strip().isdigit():
            for d in dirs:
                d.delay_ns = int(line) * 1000
            print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
