"""A misbehaving HTTP upstream for the lab fault tests (tests/lab_faults_upstream.rs).

Usage: upstream.py MODE IP PORT EVENTS_FILE

Listens on IP:PORT (run it in the lab's upstream namespace only) and serves
every connection on its own thread as MODE says:

  silent      reads the request, never answers (holds the connection)
  garbage     answers a line that is not HTTP, then closes
  garbage-open  the same, but keeps the connection open
  binary      answers 4 KiB of random bytes, then closes
  endless-head  answers "HTTP/1.1 200 OK" and header lines forever, never the blank line
  reset-head  reads the request, then resets the connection (RST, no answer)
  reset-body  answers a head announcing 10 MB, sends 256 KiB, then resets
  stall-body  answers a head announcing 1 MB, sends 64 KiB, then holds the connection
  sink        reads a request and its Content-Length body, answers "got N"
  stream      answers a head announcing 1 GiB and sends until the peer goes away

One line per event goes to EVENTS_FILE (flushed at once): "accept ID",
"request ID", "sent ID BYTES", "progress ID BYTES" (sink: every MiB of
body), "got ID BYTES", "closed ID HOW" where HOW is
eof, reset, or done (we closed), so a test can see when the proxy let go of
an upstream connection.
"""
import fcntl
import os
import socket
import struct
import sys
import termios
import threading
import time

mode, ip, port, events_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
events = open(events_path, "a", buffering=1)
events_lock = threading.Lock()
held = []


def event(*words):
    with events_lock:
        events.write(" ".join(str(w) for w in words) + "\n")


def reset(c):
    # SO_LINGER with a zero timeout: close() sends a RST instead of a FIN.
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def wait_acked(c, cid, secs=5.0):
    """Waits until the proxy has ACKed all we sent (SIOCOUTQ is 0); after
    `secs` logs "unacked ID BYTES" and returns False."""
    deadline = time.monotonic() + secs
    while True:
        left = struct.unpack("i", fcntl.ioctl(c, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        if left == 0:
            return True
        if time.monotonic() >= deadline:
            event("unacked", cid, left)
            return False
        time.sleep(0.01)  # the polling interval, not the wait


def read_head(c):
    """Reads until the end of a request head; returns (head, extra body bytes) or None at EOF."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = c.recv(65536)
        if not b:
            return None
        buf += b
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def content_length(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def wait_gone(c, cid):
    """Holds the connection until the peer closes or resets it."""
    try:
        while True:
            b = c.recv(65536)
            if not b:
                event("closed", cid, "eof")
                return
    except OSError:
        event("closed", cid, "reset")


def send_all(c, cid, data):
    try:
        c.sendall(data)
        return True
    except OSError:
        event("closed", cid, "reset")
        return False


def serve(c, cid):
    try:
        got = read_head(c)
    except OSError:
        event("closed", cid, "reset")
        return
    if got is None:
        event("closed", cid, "eof")
        return
    head, rest = got
    event("request", cid)
    if mode == "silent":
        return wait_gone(c, cid)
    if mode in ("garbage", "garbage-open"):
        if not send_all(c, cid, b"this is not HTTP at all\r\n\r\n"):
            return
        if mode == "garbage-open":
            return wait_gone(c, cid)
    elif mode == "binary":
        if not send_all(c, cid, os.urandom(4096)):
            return
    elif mode == "endless-head":
        if not send_all(c, cid, b"HTTP/1.1 200 OK\r\n"):
            return
        n = 0
        while send_all(c, cid, b"X-Filler-%d: %s\r\n" % (n, b"y" * 100)):
            n += 1
            if n % 100 == 0:
                time.sleep(0.01)  # paces the endless head: the point of the mode
        return
    elif mode == "reset-head":
        reset(c)
        event("closed", cid, "done")
        return
    elif mode == "reset-body":
        body = b"z" * (256 * 1024)
        if not send_all(c, cid, b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + body):
            return
        event("sent", cid, len(body))
        # The body reaches the proxy (and the client has the 200 head) before the RST.
        wait_acked(c, cid)
        reset(c)
        event("closed", cid, "done")
        return
    elif mode == "stall-body":
        body = b"z" * (64 * 1024)
        if not send_all(c, cid, b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n" + body):
            return
        event("sent", cid, len(body))
        return wait_gone(c, cid)
    elif mode == "sink":
        want, have, mark = content_length(head), len(rest), 1 << 20
        try:
            while have < want:
                b = c.recv(min(65536, want - have))
                if not b:
                    event("got", cid, have)
                    event("closed", cid, "eof")
                    return
                have += len(b)
                if have >= mark:
                    event("progress", cid, have)
                    mark += 1 << 20
        except OSError:
            event("got", cid, have)
            event("closed", cid, "reset")
            return
        event("got", cid, have)
        text = b"got %d\n" % have
        if not send_all(c, cid, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(text), text)):
            return
    elif mode == "stream":
        if not send_all(c, cid, b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n"):
            return
        chunk, sent = b"s" * 65536, 0
        while sent < 1 << 30:
            if not send_all(c, cid, chunk):
                event("sent", cid, sent)
                return
            sent += len(chunk)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    try:
        c.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    c.close()
    event("closed", cid, "done")


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port))
s.listen(256)
event("listening", port)
n = 0
while True:
    c, _ = s.accept()
    n += 1
    event("accept", n)
    held.append(c)
    threading.Thread(target=serve, args=(c, n), daemon=True).start()
