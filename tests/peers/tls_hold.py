#!/usr/bin/env python3
"""One keep-alive HTTPS connection across a certificate swap (lab_tls).

Usage: tls_hold.py HOST PORT SNI CAFILE OUT GO

Connects, sends a GET, writes "serial=<hex> status=<code>" to OUT, waits
(up to 20 s) until the file GO exists, sends a second GET on the same
connection and appends "again status=<code>" to OUT.
"""
import os
import socket
import ssl
import sys
import time

host, port, sni, cafile, out, go = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=cafile)
raw = socket.create_connection((host, int(port)), timeout=10)
s = ctx.wrap_socket(raw, server_hostname=sni)
der = s.getpeercert(binary_form=True)


def serial_of(der):
    # The serial is not in getpeercert() for a binary cert; parse it with
    # the ssl module's decoder via a PEM round trip.
    import subprocess
    pem = ssl.DER_cert_to_PEM_cert(der)
    r = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem.encode(),
                       capture_output=True, check=True)
    return r.stdout.decode().strip().split("=", 1)[1]


def get():
    s.sendall(b"GET / HTTP/1.1\r\nHost: " + sni.encode() + b"\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            return "eof"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    return head.split(b" ")[1].decode()


with open(out, "w") as f:
    f.write(f"serial={serial_of(der)} status={get()}\n")
deadline = time.time() + 20
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.05)
with open(out, "a") as f:
    f.write(f"again status={get()}\n")
