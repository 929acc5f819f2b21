"""A WebSocket echo upstream for tests/lab_upgrade.rs (python3-websockets).

Usage: ws_echo.py IP PORT

Echoes every message back as it came (text or binary, any size). On path
/close it echoes the first message, then closes the WebSocket itself (code
1000), so a test sees a close that starts at the upstream. Prints
"listening" once it accepts connections.
"""
import asyncio
import sys

import websockets

ip, port = sys.argv[1], int(sys.argv[2])


async def echo(ws, path):
    if path == "/ws/close":
        msg = await ws.recv()
        await ws.send(msg)
        await ws.close(1000, "upstream says bye")
        return
    async for msg in ws:
        await ws.send(msg)


async def main():
    # backlog: 500 clients open at once; the default 100 drops SYNs, and a
    # connect that waits for a retransmit marks the server down.
    async with websockets.serve(echo, ip, port, max_size=None, max_queue=4, compression=None, backlog=1024):
        print("listening", flush=True)
        await asyncio.Future()


asyncio.run(main())
