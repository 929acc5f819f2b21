"""An HTTP upstream for the `Expect: 100-continue` lab test (tests/lab_upgrade.rs).

Usage: continue_upstream.py IP PORT

Per connection: reads a request head; when it has `Expect: 100-continue`
answers `HTTP/1.1 100 Continue` first; then reads the whole Content-Length
body and answers 200 with "LENGTH SHA256HEX EXPECT" (EXPECT: whether the
request carried the expectation). Prints "listening" when ready.
"""
import hashlib
import socket
import sys
import threading

ip, port = sys.argv[1], int(sys.argv[2])


def serve(c):
    with c:
        buf = b""
        while b"\r\n\r\n" not in buf:
            b = c.recv(65536)
            if not b:
                return
            buf += b
        head, rest = buf.split(b"\r\n\r\n", 1)
        fields = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        expect = fields.get(b"expect", b"").lower() == b"100-continue"
        if expect:
            c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        left = int(fields.get(b"content-length", b"0")) - len(rest)
        h = hashlib.sha256(rest)
        got = len(rest)
        while left > 0:
            b = c.recv(min(left, 1 << 20))
            if not b:
                return
            h.update(b)
            got += len(b)
            left -= len(b)
        body = f"{got} {h.hexdigest()} {'expect' if expect else 'no-expect'}\n".encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port))
s.listen(64)
print("listening", flush=True)
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
