"""ASGI apps for `certified serve` in tests: servers that behave badly or slowly on
purpose.

- `stalled`: takes every HTTP request and never answers it (a service stuck behind
  something slow, such as psik-api waiting on a hung sbatch).
- `slow_body`: GET /?mib=N&mark=PATH creates the file PATH as the request arrives and
  answers, 1 s later, with N MiB of `pattern` (a response still in flight when the
  server is told to stop).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qs

MIB = 2**20


async def _lifespan(receive, send) -> None:
    """Answer the lifespan protocol: start-up and shutdown complete at once."""
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def stalled(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    while (await receive())["type"] != "http.disconnect":
        pass  # the request's body: read, never answered; returns once the client left


def pattern(mib: int) -> bytes:
    """The body `slow_body` answers GET /?mib=N with (every byte known to the client)."""
    return bytes(range(256)) * (mib * MIB // 256)


async def slow_body(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    query = parse_qs(scope["query_string"].decode())
    mib = int(query.get("mib", ["1"])[0])
    if "mark" in query:
        Path(query["mark"][0]).touch()
    await asyncio.sleep(1.0)
    body = pattern(mib)
    headers = [(b"content-type", b"application/octet-stream"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(0, len(body), MIB):  # in chunks, as a streaming response sends
        await send({"type": "http.response.body", "body": body[i : i + MIB],
                    "more_body": i + MIB < len(body)})  # fmt: skip
