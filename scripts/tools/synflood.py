#!/usr/bin/env python3
"""Send a flood of spoofed TCP SYNs out of an interface (AF_PACKET), for tests.

usage: synflood.py IFACE DST_MAC DST_IP DST_PORT COUNT [SECONDS [PPS [SRC_NET]]]

Every SYN has a random source address in SRC_NET (default 10.200.0.0/16,
at most 2^24 addresses), a random source port and a random ISN, so each is
a new half-open flow. The frames are built first (valid IPv4 and TCP
checksums, the interface's own MAC as source), then sent back to back as
fast as one core allows; with SECONDS, sent over and over for that long
(a flow table holding fewer than COUNT embryonic flows has evicted a SYN's
flow before it comes again, so each is a new flow again). PPS > 0 paces the sending to that many
SYNs per second (0: as fast as possible). Prints {"sent": N, "seconds": S, "pps": R} as JSON.
"""
import ipaddress
import json
import os
import random
import socket
import struct
import sys
import time


def fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def words(b: bytes) -> int:
    return sum(struct.unpack(f"!{len(b) // 2}H", b))


def main() -> int:
    if len(sys.argv) not in (6, 7, 8, 9):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    iface, dst_mac, dst_ip, dport, count = sys.argv[1:6]
    seconds = float(sys.argv[6]) if len(sys.argv) >= 7 else 0.0
    pps = float(sys.argv[7]) if len(sys.argv) >= 8 else 0.0
    net = ipaddress.ip_network(sys.argv[8] if len(sys.argv) == 9 else "10.200.0.0/16")
    dport, count = int(dport), int(count)
    src_mac = open(f"/sys/class/net/{iface}/address").read().strip()
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
    dst = socket.inet_aton(dst_ip)
    base = int(net.network_address)
    span = min(net.num_addresses, 1 << 24)
    rnd = random.Random(os.getpid())
    # Constant parts of the checksums: the IP header without its source,
    # and the TCP pseudo-header and header without source, port and ISN.
    ip_const = words(struct.pack("!BBHHHBBH4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0, b"\0" * 4) + dst)
    tcp_const = words(dst) + 6 + 20 + words(struct.pack("!HIIBBHHH", dport, 0, 0, 0x50, 0x02, 64240, 0, 0)) - dport
    frames = []
    for _ in range(count):
        src = base + rnd.randrange(1, span - 1) if span > 2 else base
        sport = rnd.randrange(1024, 65536)
        seq = rnd.getrandbits(32)
        s_hi, s_lo = src >> 16, src & 0xFFFF
        ip_sum = ~fold(ip_const + s_hi + s_lo) & 0xFFFF
        tcp_sum = ~fold(tcp_const + s_hi + s_lo + sport + dport + (seq >> 16) + (seq & 0xFFFF)) & 0xFFFF
        ip = struct.pack("!BBHHHBBHI4s", 0x45, 0, 40, 0, 0x4000, 64, 6, ip_sum, src, dst)
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 0x50, 0x02, 64240, tcp_sum, 0)
        frames.append(eth + ip + tcp + b"\0" * 6)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    send = s.send
    sent = 0
    print("sending", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    while True:
        for i, f in enumerate(frames):
            if pps > 0 and i % 64 == 0:
                ahead = sent / pps - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            try:
                send(f)
                sent += 1
            except BlockingIOError:
                pass
            except OSError as e:  # ENOBUFS: the queue is full; go on
                if e.errno != 105:
                    raise
        if time.monotonic() - t0 >= seconds:
            break
    dt = time.monotonic() - t0
    print(json.dumps({"sent": sent, "seconds": round(dt, 3), "pps": round(sent / dt) if dt > 0 else 0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
