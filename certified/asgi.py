"""ASGI side of mTLS: the peer certificate in the scope, identity, revocation, access log.

Uvicorn does not put the TLS peer certificate into the ASGI scope. `certified.serve`
uses protocol subclasses that, per connection, wrap the app with `bind_extensions`,
filling ``scope["extensions"]["tls"]`` from `tls_extension` (ASGI TLS extension keys
plus ``client_identity``). `CertifiedMiddleware` then refuses revoked certificates and
writes one JSON access-log line per request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Annotated

from cryptography import x509
from fastapi import Depends, HTTPException, Request

from .pki import identity_of, pem
from .revocation import RevocationList
from .trust import ClientCA, client_identity_of

access_log = logging.getLogger("certified.access")


@dataclass(frozen=True)
class Peer:
    """What a server knows about the client of one TLS connection."""

    identity: str
    serial: int
    issuer: str
    pem: str


def peer_from_der(der: bytes | None, cas: list[ClientCA] | None = None) -> Peer | None:
    """The peer of a connection; with `cas`, its identity as those CAs vouch for it."""
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    ident = identity_of(cert) if cas is None else client_identity_of(cert, cas)
    if ident is None:
        return None
    return Peer(ident, cert.serial_number, cert.issuer.rfc4514_string(), pem(cert))


def tls_extension(peer: Peer | None) -> tuple[dict, dict]:
    """Scope extensions and state for one TLS connection's peer."""
    tls = {
        "client_cert_chain": [peer.pem] if peer else [],
        "client_identity": peer.identity if peer else None,
        "client_serial": peer.serial if peer else None,
        "client_issuer": peer.issuer if peer else None,
    }
    return {"tls": tls}, {"client_identity": tls["client_identity"]}


def bind_extensions(app, extensions: dict, state: dict | None = None):
    """Wrap `app` for one connection: every http/websocket scope gets `extensions`
    (and `state` entries) merged in. Both are computed once, when the connection is made."""

    async def with_extensions(scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), **extensions}}
            if state:
                scope.setdefault("state", {}).update(state)
        await app(scope, receive, send)

    return with_extensions


def scope_identity(scope) -> str | None:
    return ((scope.get("extensions") or {}).get("tls") or {}).get("client_identity")


def client_identity(request: Request) -> str:
    """FastAPI dependency: the authenticated client identity (`uid:...` or `cn:...`)."""
    ident = scope_identity(request.scope)
    if not ident:
        raise HTTPException(status_code=401, detail="client certificate required")
    return ident


#: a route parameter holding the caller's identity (`client_identity` as a dependency).
Identity = Annotated[str, Depends(client_identity)]
#: the largest integer a query parameter may carry (file offsets are signed 64-bit).
MAX_QUERY_INT = 2**63 - 1


class CertifiedMiddleware:
    """Refuses revoked client certificates (403) and logs every request as JSON."""

    def __init__(self, app, revocation: RevocationList | None = None) -> None:
        self.app = app
        self.revocation = revocation

    def _revoked(self, tls: dict) -> bool:
        return (
            self.revocation is not None
            and tls.get("client_serial") is not None
            and self.revocation.is_revoked(tls["client_issuer"], tls["client_serial"])
        )

    async def __call__(self, scope, receive, send):
        tls = (scope.get("extensions") or {}).get("tls") or {}
        if scope["type"] == "websocket" and self._revoked(tls):
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008, "reason": "certificate revoked"})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}
        logged = False

        def log_once() -> None:
            nonlocal logged
            if not logged:
                logged = True
                _log_access(scope, tls, status["code"], start)

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # logged before the last byte leaves: a client that has its response can
                # rely on the line, and background tasks do not delay it or its duration
                log_once()
            await send(message)

        try:
            if self._revoked(tls):
                await _refuse(send_wrapper, 403, b'{"detail":"client certificate revoked"}')
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            log_once()  # no complete response (an error, a client gone): still one line


def _log_access(scope, tls: dict, status: int, start: float) -> None:
    client = scope.get("client") or ("", 0)
    access_log.info(
        "%s %s %s",
        scope.get("method"),
        scope.get("path"),
        status,
        extra={
            "method": scope.get("method"),
            "path": scope.get("path"),
            "status": status,
            "duration_ms": round((time.perf_counter() - start) * 1000, 3),
            "client_identity": tls.get("client_identity"),
            "remote": f"{client[0]}:{client[1]}",
        },
    )


async def _refuse(send, code: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
