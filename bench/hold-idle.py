"""Holds N idle TCP connections to HOST:PORT until stdin closes or TTL passes.

Usage: hold-idle.py HOST PORT N TTL_SECONDS
Prints "open N" once every connection is established (or the error count).
Used by bench/flatness.sh (the tests drive tests/peers/holder.py); only ever
run it inside the lab's client namespace.
"""
import socket
import sys
import time

host, port, n, ttl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
socks, errors = [], 0
for _ in range(n):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((host, port))
        socks.append(s)
    except OSError:
        errors += 1
        s.close()
print(f"open {len(socks)} errors {errors}", flush=True)
deadline = time.time() + ttl
while time.time() < deadline:
    time.sleep(0.2)
for s in socks:
    s.close()
print("closed", flush=True)
