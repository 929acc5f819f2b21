#!/usr/bin/env python3
"""ICMPv6 Packet Too Big into an open IPv6 transfer, for
tests/lab_ipv6_flows.rs (root, inside the lab's client namespace only).

Usage: ptb6.py IFACE SERVER PORT MTU

Downloads /bytes/1000000 from [SERVER]:PORT, reading slowly at first so the
server keeps data in flight. Watching IFACE (AF_PACKET) it learns the
server's last data segment; sends an off-path Packet Too Big (a sequence
number far from what is in flight) and then a real one quoting that
segment, both from this host's address and saying MTU; then reads the rest
fast. Prints one JSON object: the bytes received, the largest IPv6 packet
the server sent before and after the real PTB (a moment after it, once
what was in flight has arrived).
"""
import json
import socket
import struct
import sys
import threading
import time

ETH_P_ALL = 0x0003


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def main():
    iface, server, port, mtu = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sniff.bind((iface, 0))
    sniff.settimeout(0.05)
    conn = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    conn.settimeout(10)
    conn.connect((server, port))
    client, cport = conn.getsockname()[:2]
    srv = socket.inet_pton(socket.AF_INET6, server)
    state = {"last": None, "phase": "before", "max": {"before": 0, "after": 0}, "stop": False}

    def watch():
        while not state["stop"]:
            try:
                f = sniff.recv(65536)
            except socket.timeout:
                continue
            if len(f) < 74 or f[12:14] != b"\x86\xdd" or f[20] != 6 or f[22:38] != srv:
                continue
            sport, dport = struct.unpack("!HH", f[54:58])
            if (sport, dport) != (port, cport):
                continue
            plen = struct.unpack("!H", f[18:20])[0]
            if plen > (f[66] >> 4) * 4:
                state["last"] = f[14 : 14 + 40 + plen]
                phase = state["phase"]
                if phase != "sending":
                    state["max"][phase] = max(state["max"][phase], 40 + plen)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    conn.sendall(f"GET /bytes/1000000 HTTP/1.1\r\nHost: [{server}]\r\nConnection: close\r\n\r\n".encode())
    got = 0
    # Slowly: the server's send buffer stays full and its window small.
    while got < 200_000:
        b = conn.recv(4096)
        if not b:
            break
        got += len(b)
        time.sleep(0.002)
    time.sleep(0.2)
    quoted = state["last"]
    raw = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)

    def ptb(quote):
        body = struct.pack("!BBHI", 2, 0, 0, mtu) + quote[: 1280 - 48]
        pseudo = socket.inet_pton(socket.AF_INET6, client) + srv + struct.pack("!I", len(body)) + b"\0\0\0\x3a"
        body = body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]
        raw.sendto(body, (server, 0))

    state["phase"] = "sending"
    off_path = bytearray(quoted)
    seq = struct.unpack("!I", off_path[44:48])[0]
    off_path[44:48] = struct.pack("!I", (seq + 0x40000000) & 0xFFFFFFFF)
    ptb(bytes(off_path))
    ptb(quoted)
    time.sleep(0.3)
    state["phase"] = "after"
    while True:
        b = conn.recv(65536)
        if not b:
            break
        got += len(b)
    time.sleep(0.1)
    state["stop"] = True
    head = got  # the response head is counted too; the caller checks the body
    print(json.dumps({"received": head, "max_before": state["max"]["before"],
                      "max_after": state["max"]["after"]}), flush=True)


if __name__ == "__main__":
    main()
