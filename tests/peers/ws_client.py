"""WebSocket clients through ZProxy for tests/lab_upgrade.rs (python3-websockets).

Usage: ws_client.py URL MODE [N]

  echo N        one connection: N binary messages, sizes from 1 B to 1 MiB
                (log-spaced, random bytes), each echo compared byte for byte:
                "ok N UP_BYTES DOWN_BYTES" or "bad ..."
  client-close  sends one message, closes from the client: "closed CODE SECONDS"
  server-close  (URL path /ws/close) sends one message, reads the echo, then
                waits for the upstream's close: "closed CODE SECONDS"
  hold N        opens N connections: "open K errors E", then per stdin line
                "echo" each sends a message and reads it back ("echoed K"),
                "close" closes all ("closed K") and exits
"""
import asyncio
import math
import os
import sys
import time

import websockets

url, mode = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 0


def say(*words):
    print(*words, flush=True)


def connect():
    return websockets.connect(url, max_size=None, compression=None, open_timeout=10, close_timeout=10)


async def echo():
    up = down = 0
    async with connect() as ws:
        for i in range(n):
            size = max(1, round(math.exp(math.log(1 << 20) * i / (n - 1))))
            msg = os.urandom(size)
            await ws.send(msg)
            got = await asyncio.wait_for(ws.recv(), 30)
            if got != msg:
                say("bad", i, size, len(got))
                return
            up += size
            down += len(got)
    say("ok", n, up, down)


async def client_close():
    async with connect() as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        t = time.monotonic()
        await ws.close(1000, "client says bye")
        await ws.wait_closed()
        say("closed", ws.close_code, round(time.monotonic() - t, 3))


async def server_close():
    async with connect() as ws:
        await ws.send("bye")
        assert await ws.recv() == "bye"
        t = time.monotonic()
        try:
            await asyncio.wait_for(ws.recv(), 10)
            say("unexpected message")
            return
        except websockets.ConnectionClosed:
            pass
        await ws.wait_closed()
        say("closed", ws.close_code, round(time.monotonic() - t, 3))


async def hold():
    results = await asyncio.gather(*[connect() for _ in range(n)], return_exceptions=True)
    conns = [r for r in results if not isinstance(r, BaseException)]
    say("open", len(conns), "errors", len(results) - len(conns))
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "echo":
            async def one(i, ws):
                await ws.send(f"m{i}")
                return await asyncio.wait_for(ws.recv(), 20) == f"m{i}"
            oks = await asyncio.gather(*[one(i, ws) for i, ws in enumerate(conns)], return_exceptions=True)
            say("echoed", sum(1 for o in oks if o is True))
        else:
            await asyncio.gather(*[ws.close() for ws in conns], return_exceptions=True)
            say("closed", len(conns))
            return


asyncio.run({"echo": echo, "client-close": client_close, "server-close": server_close, "hold": hold}[mode]())
