#!/usr/bin/env python3
"""Rate-limit lab client: GETs (one connection each) from a chosen source
address, for the netns lab only.

    ratelimit_client.py TARGET PORT PATH --source A --rate R --duration S

Sends R requests per second (0: as fast as it can) for S seconds and
prints one JSON object: counts by status, the Retry-After values seen on
429s, and errors by kind (e.g. ConnectionRefusedError: a RST to the SYN)."""
import argparse
import http.client
import json
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("port", type=int)
    ap.add_argument("path")
    ap.add_argument("--source", required=True)
    ap.add_argument("--rate", type=float, default=0)
    ap.add_argument("--duration", type=float, default=3)
    a = ap.parse_args()
    statuses, retry_after, errors = {}, [], {}
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < a.duration:
        if a.rate > 0:
            due = start + n / a.rate
            time.sleep(max(0.0, due - time.monotonic()))
        n += 1
        try:
            c = http.client.HTTPConnection(a.target, a.port, timeout=5, source_address=(a.source, 0))
            c.request("GET", a.path, headers={"Connection": "close"})
            r = c.getresponse()
            r.read()
            statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
            if r.status == 429:
                retry_after.append(r.getheader("Retry-After"))
            c.close()
        except OSError as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
    print(json.dumps({"sent": n, "statuses": statuses, "retry_after": sorted(set(map(str, retry_after))), "errors": errors}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
