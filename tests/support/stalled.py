"""An ASGI app that takes every HTTP request and never answers it (for `certified serve`):
a service stuck behind something slow, such as psik-api waiting on a hung sbatch."""

from __future__ import annotations


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    while (await receive())["type"] != "http.disconnect":
        pass  # the request's body: read, never answered; returns once the client left
