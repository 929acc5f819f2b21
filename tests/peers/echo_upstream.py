#!/usr/bin/env python3
"""A plain TCP echo upstream for lab_tls (`mode = "tls"` listeners).

Usage: echo_upstream.py IP PORT (IPv4 or IPv6)

Every connection (one thread each): every byte received is sent back as
it comes; at the client's EOF (a half-close: our sending side is still
open) it sends "eof <bytes> <sha256 hex>\\n" of all it received, then
closes. The trailer only arrives if the proxy passed the half-close on
and kept relaying the other way after it.
"""
import hashlib
import socket
import sys
import threading

ip, port = sys.argv[1], int(sys.argv[2])


def serve(c):
    total, digest = 0, hashlib.sha256()
    with c:
        while True:
            b = c.recv(65536)
            if not b:
                break
            total += len(b)
            digest.update(b)
            c.sendall(b)
        c.sendall(b"eof %d %s\n" % (total, digest.hexdigest().encode()))
        c.shutdown(socket.SHUT_WR)


srv = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((ip, port))
srv.listen(64)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
