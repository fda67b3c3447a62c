"""A tiny app that answers who the client is; handy to check an mTLS setup end to end."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request

from .asgi import client_identity

app = FastAPI(title="certified whoami")


@app.get("/")
def whoami(request: Request, identity: str = Depends(client_identity)) -> dict:
    """The authenticated identity and the TLS details the server saw."""
    tls = request.scope["extensions"]["tls"]
    return {
        "identity": identity,
        "serial": f"{tls['client_serial']:x}",
        "issuer": tls["client_issuer"],
    }


@app.post("/echo")
async def echo(request: Request, identity: str = Depends(client_identity)) -> dict:
    """Echo a JSON body back with the caller's identity."""
    return {"identity": identity, "body": await request.json()}
