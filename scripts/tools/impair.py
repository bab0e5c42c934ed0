#!/usr/bin/env python3
"""Impairment bridge: forward Ethernet frames between two interfaces in user
space (AF_PACKET), dropping, reordering and duplicating IPv4 TCP frames with
the configured probabilities. Other frames (ARP, ...) pass untouched.

usage: impair.py --a IF --b IF [--loss P] [--reorder P] [--dup P]
                 [--hold N] [--delay-ms N] [--seed S]

Per frame, in each direction independently:
  loss     drop it;
  reorder  hold it back until 1..N later frames of the same direction have
           been sent (N = --hold) or --delay-ms has passed, whichever is
           first, then send it;
  dup      send it twice: back to back, or, when the frame is also being
           held, one copy now and the held one later (a late duplicate).

Frames are read from packet sockets bound to each interface; frames whose
pkttype is PACKET_OUTGOING (our own transmissions, seen again by the socket
on that interface) are skipped, and PACKET_IGNORE_OUTGOING is set where the
kernel has it. Put both interfaces in promiscuous mode. On SIGTERM or
SIGINT, held frames are flushed and the counters are printed as one line:
"impair: forwarded=N dropped=N reordered=N duplicated=N passed_other=N".
With --seed the decisions are a deterministic function of the frames'
arrival order (timing still decides when held frames are released).
"""
import argparse
import collections
import random
import select
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = getattr(socket, "PACKET_OUTGOING", 4)


def open_if(name: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((name, ETH_P_ALL))
    try:
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        pass  # older kernel: the pkttype check below does the job
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    s.setblocking(False)
    return s


def is_tcp(frame: bytes) -> bool:
    # Ethernet II, IPv4, protocol 6 (an 802.1Q tag is not expected here).
    return len(frame) >= 34 and frame[12:14] == b"\x08\x00" and frame[23] == 6


class Direction:
    """One direction of the bridge: frames read on `src`, sent on `dst`."""

    def __init__(self, dst: socket.socket):
        self.dst = dst
        # Held frames: [frames_still_to_pass, deadline, frame].
        self.held = collections.deque()


class Bridge:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.a = open_if(args.a)
        self.b = open_if(args.b)
        self.dirs = {self.a.fileno(): Direction(self.b), self.b.fileno(): Direction(self.a)}
        self.socks = {self.a.fileno(): self.a, self.b.fileno(): self.b}
        self.c = collections.Counter()
        self.stop = False

    def send(self, d: Direction, frame: bytes) -> None:
        for _ in range(100):
            try:
                d.dst.send(frame)
                self.c["forwarded"] += 1
                return
            except BlockingIOError:
                select.select([], [d.dst], [], 0.01)
            except OSError as e:  # e.g. ENOBUFS: count it as a loss
                self.c["send_errors"] += 1
                print(f"impair: send: {e}", file=sys.stderr)
                return
        self.c["send_errors"] += 1

    def sent_one(self, d: Direction) -> None:
        """A frame went out in direction d: release held ones that were due."""
        for h in d.held:
            h[0] -= 1
        self.release(d, time.monotonic())

    def release(self, d: Direction, now: float) -> None:
        while True:
            due = [h for h in d.held if h[0] <= 0 or h[1] <= now]
            if not due:
                return
            for h in due:
                d.held.remove(h)
            for h in due:
                self.send(d, h[2])
                # A released frame counts as a later frame for the others.
                for o in d.held:
                    o[0] -= 1

    def on_frame(self, d: Direction, frame: bytes) -> None:
        a = self.args
        if not is_tcp(frame):
            self.c["passed_other"] += 1
            self.send(d, frame)
            self.sent_one(d)
            return
        r = self.rng
        # Draw all three numbers every time so decisions stay aligned with
        # the arrival order whatever the probabilities.
        lose, reorder, dup = r.random() < a.loss, r.random() < a.reorder, r.random() < a.dup
        hold_n = r.randint(1, a.hold)
        if lose:
            self.c["dropped"] += 1
            return
        if reorder:
            self.c["reordered"] += 1
            if dup:
                self.c["duplicated"] += 1
                self.send(d, frame)
                self.sent_one(d)
            d.held.append([hold_n, time.monotonic() + a.delay_ms / 1000.0, frame])
            return
        self.send(d, frame)
        if dup:
            self.c["duplicated"] += 1
            self.send(d, frame)
        self.sent_one(d)

    def run(self) -> None:
        poller = select.poll()
        for fd in self.socks:
            poller.register(fd, select.POLLIN)
        while not self.stop:
            deadlines = [h[1] for d in self.dirs.values() for h in d.held]
            # Bounded, so a signal (which poll() retries through) is seen.
            timeout = 200.0
            if deadlines:
                timeout = min(timeout, max(0.0, (min(deadlines) - time.monotonic()) * 1000.0))
            try:
                ready = poller.poll(timeout)
            except InterruptedError:
                continue
            for fd, _ev in ready:
                s, d = self.socks[fd], self.dirs[fd]
                for _ in range(64):
                    try:
                        frame, addr = s.recvfrom(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    if addr[2] == PACKET_OUTGOING:
                        continue
                    self.on_frame(d, frame)
            now = time.monotonic()
            for d in self.dirs.values():
                if d.held:
                    self.release(d, now)
        for d in self.dirs.values():
            while d.held:
                self.send(d, d.held.popleft()[2])

    def report(self) -> str:
        keys = ["forwarded", "dropped", "reordered", "duplicated", "passed_other", "send_errors"]
        return "impair: " + " ".join(f"{k}={self.c[k]}" for k in keys)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", required=True, help="first interface")
    p.add_argument("--b", required=True, help="second interface")
    p.add_argument("--loss", type=float, default=0.0, help="drop probability per TCP frame")
    p.add_argument("--reorder", type=float, default=0.0, help="hold-back probability per TCP frame")
    p.add_argument("--dup", type=float, default=0.0, help="duplication probability per TCP frame")
    p.add_argument("--hold", type=int, default=3, help="a held frame goes after 1..HOLD later frames")
    p.add_argument("--delay-ms", type=float, default=2.0, help="longest hold of a reordered frame")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    if args.hold < 1:
        p.error("--hold must be at least 1")
    bridge = Bridge(args)

    def on_signal(_sig, _frm):
        bridge.stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"impair: {args.a} <-> {args.b} loss={args.loss} reorder={args.reorder} dup={args.dup} "
          f"hold={args.hold} delay_ms={args.delay_ms} seed={args.seed}", file=sys.stderr, flush=True)
    bridge.run()
    print(bridge.report(), flush=True)


if __name__ == "__main__":
    main()
