"""A minimal syslog sink for HAProxy's log in the lab (bench/run-lab.sh
--access-log): receives datagrams on a UNIX socket and appends each as one
line to a file, buffered and flushed every 100 ms - what ZProxy's access log
writer does with its file.

Usage: log-sink.py SOCKET FILE
"""
import os
import socket
import sys
import time

sock_path, file_path = sys.argv[1], sys.argv[2]
try:
    os.unlink(sock_path)
except FileNotFoundError:
    pass
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(sock_path)
s.settimeout(0.1)
out = open(file_path, "ab", buffering=1 << 16)
last = time.monotonic()
while True:
    try:
        d = s.recv(65536)
        out.write(d.rstrip(b"\n") + b"\n")
    except socket.timeout:
        pass
    if time.monotonic() - last >= 0.1:
        out.flush()
        last = time.monotonic()
