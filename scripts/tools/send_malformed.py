#!/usr/bin/env python3
"""Send crafted malformed frames out of an interface (AF_PACKET), for tests.

usage: send_malformed.py IFACE DST_MAC COUNT

Sends COUNT frames of each kind and prints the kinds as JSON
({"ipv4_bad_checksum": COUNT, ...}), named like ubox's drop reasons.
"""
import json
import socket
import struct
import sys


def csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(payload: bytes, total_len=None, good_csum=True) -> bytes:
    tl = 20 + len(payload) if total_len is None else total_len
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, tl, 1, 0, 64, 6, 0,
                    socket.inet_aton("10.10.0.1"), socket.inet_aton("10.10.0.11"))
    c = csum(h) if good_csum else (csum(h) ^ 0x5A5A)
    return h[:10] + struct.pack("!H", c) + h[12:] + payload


def tcp(data_offset_words=5) -> bytes:
    return struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, data_offset_words << 4, 0x02, 64240, 0, 0)


def main() -> None:
    iface, dst, count = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), int(sys.argv[3])
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    src = s.getsockname()[4][:6]
    eth = dst + src + b"\x08\x00"
    kinds = {
        "ipv4_bad_checksum": eth + ipv4(tcp(), good_csum=False),
        "ipv4_bad_total_len": eth + ipv4(tcp(), total_len=1400),
        "tcp_bad_header_len": eth + ipv4(tcp(data_offset_words=3)),
        # (A frame shorter than 14 bytes cannot be sent: the kernel pads it.)
        "ipv4_truncated": eth + ipv4(tcp())[:10],
    }
    for frame in kinds.values():
        for _ in range(count):
            s.send(frame)
    print(json.dumps({k: count for k in kinds}))


if __name__ == "__main__":
    main()
