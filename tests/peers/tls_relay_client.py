#!/usr/bin/env python3
"""A TLS client of a `mode = "tls"` listener (lab_tls), against
echo_upstream.py behind it.

Usage: tls_relay_client.py HOST PORT SNI CAFILE BYTES HOW

Sends BYTES random bytes over TLS while reading the echo, then half-closes
(HOW: "notify" sends close_notify and keeps TCP open both ways; "fin"
shuts TCP's sending side without a close_notify) and keeps reading until
the proxy ends the stream. Checks that what came back is exactly the bytes
sent followed by the upstream's "eof <bytes> <sha256>" trailer; prints
"ok ..." and exits 0, else says what differed and exits 1.

One non-blocking loop over ssl.MemoryBIO, so sending and reading go on
together (a full window one way never stalls the other).
"""
import hashlib
import os
import select
import socket
import ssl
import sys
import time

host, port, sni, cafile, size, how = sys.argv[1:7]
size = int(size)
data = os.urandom(size)
want = data + b"eof %d %s\n" % (size, hashlib.sha256(data).hexdigest().encode())

ctx = ssl.create_default_context(cafile=cafile)
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname=sni)
sock = socket.create_connection((host, int(port)), timeout=10)
sock.setblocking(False)

got = bytearray()
pending = b""
sent = 0
shaken = half_closed = ended = tcp_eof = False
deadline = time.monotonic() + 30


def first_difference():
    return next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)


def fail(why):
    differ = first_difference()
    same = "the same so far" if differ is None else f"differing at offset {differ}"
    print(f"FAIL {why}: sent {sent} of {size}, got {len(got)} of {len(want)} ({same}), "
          f"half_closed={half_closed} tcp_eof={tcp_eof}", flush=True)
    sys.exit(1)


while not ended:
    if time.monotonic() > deadline:
        fail("timeout")
    if not shaken:
        try:
            tls.do_handshake()
            shaken = True
        except ssl.SSLWantReadError:
            pass
    if shaken:
        while True:
            try:
                chunk = tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                ended = True
                break
            except ssl.SSLError as e:
                fail(f"TLS error {e} (a TCP EOF without close_notify is a truncation)")
            if not chunk:
                ended = True
                break
            got += chunk
        while sent < size and len(pending) + out.pending < 262144:
            sent += tls.write(data[sent : sent + 16384])
        if sent == size and not half_closed and inc.pending == 0:
            half_closed = True
            if how == "notify":
                try:
                    tls.unwrap()  # sends close_notify; the reply comes later
                except ssl.SSLWantReadError:
                    pass
    pending += out.read()
    if how == "fin" and half_closed and not pending and not tcp_eof:
        sock.shutdown(socket.SHUT_WR)
        tcp_eof = True
    if ended:
        break
    r, w, _ = select.select([sock], [sock] if pending else [], [], 0.5)
    if w:
        try:
            pending = pending[sock.send(pending) :]
        except BlockingIOError:
            pass
    if r:
        try:
            b = sock.recv(262144)
        except BlockingIOError:
            b = None
        except ConnectionResetError:
            fail("connection reset")
        if b == b"" and not inc.eof:
            inc.write_eof()  # the reads above then end it, or call it truncated
        elif b:
            inc.write(b)

if bytes(got) != want:
    fail(f"the bytes back are not the bytes sent and the trailer (tail got {bytes(got[-60:])!r})")
print(f"ok {how}: {size} bytes each way, the trailer after the half-close", flush=True)
