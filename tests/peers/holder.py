"""Holds N idle keep-alive connections to HOST:PORT and runs requests on them
when told to (the lab tests and bench/flatness.sh; run it in the lab's client
namespace only).

Usage: holder.py HOST PORT N   (HOLDER_TIMEOUT: seconds a connect may take, 5 by default)

Prints "open K errors E" once it tried every connection, then reads
commands from stdin, one a line, answering each with one line:

  get I PATH   GET PATH on held connection I (keep-alive):
               "resp I STATUS BODY_BYTES" or "fail I WHAT"
  new          one more connection: "new ok", "new refused" or "new error WHAT"
  close        closes everything: "closed", then exits (so does EOF on stdin)
"""
import os
import socket
import sys

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# A server that drops SYNs it will not take leaves a connect waiting this long.
timeout = float(os.environ.get("HOLDER_TIMEOUT", "5"))


def say(*words):
    print(*words, flush=True)


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = s.recv(65536)
        if not b:
            raise EOFError("eof before the response head")
        buf += b
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise ValueError("no content-length")
    while len(body) < length:
        b = s.recv(65536)
        if not b:
            raise EOFError(f"eof after {len(body)} of {length} body bytes")
        body += b
    return status, len(body)


socks, errors = [], 0
for _ in range(n):
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        socks.append(s)
    except OSError:
        errors += 1
        s.close()
say("open", len(socks), "errors", errors)

for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == "get":
        i, path = int(words[1]), words[2]
        s = socks[i]
        try:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: lab\r\n\r\n".encode())
            status, length = read_response(s)
            say("resp", i, status, length)
        except (OSError, EOFError, ValueError) as e:
            say("fail", i, type(e).__name__, str(e).replace("\n", " "))
    elif words[0] == "new":
        s = socket.socket()
        s.settimeout(timeout)
        try:
            s.connect((host, port))
            say("new ok")
            socks.append(s)
        except ConnectionRefusedError:
            say("new refused")
            s.close()
        except OSError as e:
            say("new error", type(e).__name__)
            s.close()
    elif words[0] == "close":
        break
for s in socks:
    s.close()
say("closed")
