"""`lclstream ui`: a local HTTP proxy (like `kubectl proxy`) that lets a web browser see
lclstream-api's page (or any suite service's, e.g. psik-api's `/docs`) as the user,
without importing a key into the browser.

The proxy listens on a loopback address only and forwards every request to the service
over mTLS with the user's own certified identity. Other local users can reach a loopback
port too, so each request must carry a random token: the printed URL holds it once, the
proxy then keeps it in a cookie (HttpOnly, SameSite=Strict) scoped to this port. Requests
whose Host header is not the proxy's own address are refused (DNS rebinding), and so are
state-changing requests from another origin (CSRF)."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import httpx

from .api import ServerError, base_url

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: headers that describe one hop (RFC 9110 7.6.1) or belong to the browser's side only.
DROP_REQUEST = frozenset(
    {"host", "cookie", "connection", "keep-alive", "te", "trailer", "transfer-encoding",
     "upgrade", "proxy-authorization", "proxy-connection", "origin", "referer"}
)  # fmt: skip
DROP_RESPONSE = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "set-cookie"}
)


def check_loopback(host: str) -> str:
    """`host` if it is a loopback IP address; anything else is refused."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ServerError(
            f"--address {host!r}: give a loopback IP address (127.0.0.1 or ::1)"
        ) from None
    if not ip.is_loopback:
        raise ServerError(
            f"--address {host}: not a loopback address; the proxy acts with your identity,"
            " so only this machine may reach it (use 127.0.0.1 or ::1)"
        )
    return host


@dataclass(frozen=True)
class Guard:
    """Who may use the proxy: the holder of `token`, via the proxy's own address."""

    token: str
    port: int

    @property
    def cookie(self) -> str:
        return f"lclstream_ui_{self.port}"

    def hosts(self) -> set[str]:
        return {f"{h}:{self.port}" for h in ("127.0.0.1", "localhost", "[::1]")}

    def check(self, method: str, headers: dict[str, str]) -> str | None:
        """Why a request is refused, or None."""
        host = headers.get("host", "")
        if host not in self.hosts():
            return f"Host {host!r} is not this proxy's address"
        origin = headers.get("origin")
        if method not in SAFE_METHODS and origin is not None and origin != f"http://{host}":
            return f"{method} from origin {origin!r} refused (cross-site request)"
        jar = SimpleCookie()
        jar.load(headers.get("cookie", ""))
        given = jar[self.cookie].value if self.cookie in jar else ""
        if not secrets.compare_digest(given, self.token):
            return "missing or wrong token: open the URL `lclstream ui` printed"
        return None


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _plain(send, status: int, text: str, extra: list[tuple[bytes, bytes]] = ()) -> None:
    body = (text + "\n").encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", str(len(body)).encode()), *extra]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_proxy(guard: Guard, upstream: Callable[[], httpx.AsyncClient]):
    """The proxy as an ASGI app; `upstream` makes the mTLS client to the service."""
    state: dict[str, httpx.AsyncClient] = {}

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    state["client"] = upstream()
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await state["client"].aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = _headers(scope)
        query = scope.get("query_string", b"").decode("latin-1")
        params = parse_qsl(query, keep_blank_values=True)
        given = [v for k, v in params if k == "token"]
        if scope["method"] == "GET" and given and secrets.compare_digest(given[0], guard.token):
            # The printed URL: keep the token in a cookie and drop it from the address bar.
            rest = urlencode([(k, v) for k, v in params if k != "token"])
            location = scope["path"] + (f"?{rest}" if rest else "")
            cookie = f"{guard.cookie}={guard.token}; Path=/; HttpOnly; SameSite=Strict"
            extra = [(b"location", location.encode()), (b"set-cookie", cookie.encode())]
            await _plain(send, 303, f"see {location}", extra)
            return
        refused = guard.check(scope["method"], headers)
        if refused:
            await _plain(send, 403, f"lclstream ui: {refused}")
            return
        await forward(state["client"], scope, receive, send, headers, query)

    return app


async def forward(client: httpx.AsyncClient, scope, receive, send, headers, query) -> None:
    """Send the request to the service and stream its answer back."""
    chunks = []
    while True:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    out = {k: v for k, v in headers.items() if k not in DROP_REQUEST}
    url = scope["path"] + (f"?{query}" if query else "")
    request = client.build_request(scope["method"], url, headers=out, content=b"".join(chunks))
    try:
        resp = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        from certified.failures import request_failure

        why = request_failure(str(client.base_url), f"{scope['method']} {url}", exc, client.timeout)
        await _plain(send, 502, f"lclstream ui: {why}")
        return
    try:
        back = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in resp.headers.multi_items()
            if k.lower() not in DROP_RESPONSE
        ]
        await send({"type": "http.response.start", "status": resp.status_code, "headers": back})
        async for data in resp.aiter_raw():
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        await resp.aclose()


def bind(address: str, port: int) -> socket.socket:
    """A listening socket on a loopback `address` (port 0: any free port)."""
    check_loopback(address)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ServerError(f"cannot listen on {address}:{port}: {exc.strerror}") from None
    return sock


def serve(
    server: str, certified: Path | None, address: str, port: int, say: Callable[[str], None]
) -> None:
    """Run the proxy until Ctrl-C (or SIGTERM); `say` gets the URL to open."""
    import uvicorn

    from certified import Certified

    target = base_url(server)
    identity = Certified(certified)
    # An unknown nickname, a missing identity or a readable key fails here, before binding.
    identity.ssl_context(False, pinned=identity.resolve(target)[1])
    sock = bind(address, port)
    real_port = sock.getsockname()[1]
    guard = Guard(secrets.token_urlsafe(24), real_port)
    host = f"[{address}]" if ":" in address else address

    def upstream() -> httpx.AsyncClient:
        return identity.async_client(target, timeout=httpx.Timeout(60, read=None))

    app = create_proxy(guard, upstream)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    say(f"lclstream ui: {target} as {identity.identity}")
    say(f"open http://{host}:{real_port}/?token={guard.token}")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shut down cleanly, then re-raised the Ctrl-C
        pass
    finally:
        sock.close()
