"""Client-side misbehaviour at a fixed rate, for the attack lab tests
(tests/lab_attacks.rs): requests whose body is malformed or cut short.

Usage: cancelled_uploads.py IP PORT RATE SECONDS

Run it in the lab's client namespace only. RATE times a second (for SECONDS,
then it exits) it opens a connection to IP:PORT and, in turn:

  malformed  POST with `Transfer-Encoding: chunked` and the body `zz\r\n`
  cancelled  POST announcing 10 body bytes, sends 3, then FIN (a tab closed
             mid-upload)

and closes without waiting long for an answer. Prints "sent N" at the end.
"""
import socket
import sys
import threading
import time

MALFORMED = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"zz\r\n")
CANCELLED_HEAD = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"


def one(ip, port, kind):
    s = socket.create_connection((ip, port), timeout=2)
    try:
        if kind == 0:
            s.sendall(MALFORMED)
        else:
            s.sendall(CANCELLED_HEAD)
            # The head first, so the upstream connect starts; then the cut body.
            time.sleep(0.002)
            s.sendall(b"abc")
        s.shutdown(socket.SHUT_WR)
        s.settimeout(0.2)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
    finally:
        s.close()


def main():
    ip, port, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    start = time.monotonic()
    sent = 0
    while True:
        due = start + sent / rate
        now = time.monotonic()
        if now - start >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        # Each on its own thread, so a slow answer never lowers the rate.
        threading.Thread(target=attempt, args=(ip, port, sent % 2), daemon=True).start()
        sent += 1
    time.sleep(0.5)
    print(f"sent {sent}", flush=True)


def attempt(ip, port, kind):
    try:
        one(ip, port, kind)
    except OSError:
        pass


if __name__ == "__main__":
    main()
