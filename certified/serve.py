"""Run an ASGI app under uvicorn with TLS 1.3, required client certificates and JSON logs."""

from __future__ import annotations

import importlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .asgi import CertifiedMiddleware, bind_extensions, peer_from_der, tls_extension
from .errors import CertifiedError
from .handshake import alerting_protocol_factory, refuse_revoked
from .identity import Certified
from .logs import configure_json_logging
from .revocation import RevocationList

log = logging.getLogger("certified.serve")


class ConnectionScopeMixin:
    """For uvicorn protocol classes: what `connection_scope(transport)` returns, computed
    once per connection, is merged into the scope of every request on it."""

    def connection_scope(self, transport) -> tuple[dict, dict]:
        """(scope extensions, state entries) for this connection."""
        raise NotImplementedError

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self.app = bind_extensions(self.app, *self.connection_scope(transport))  # type: ignore[attr-defined]


def _abort_when_sent(loop, transport, checks: int = 50) -> None:
    """Abort `transport` once its write buffer is empty (checked every 20 ms, at most
    `checks` times: then abort anyway)."""
    if transport.get_write_buffer_size() and checks > 0:
        loop.call_later(0.02, _abort_when_sent, loop, transport, checks - 1)
    else:
        transport.abort()


class _PeerMixin(ConnectionScopeMixin):
    """Attach the TLS peer certificate and identity to every request of a connection;
    drop connections at server shutdown once they are idle."""

    _shutting_down = False

    def shutdown(self) -> None:
        """Server shutdown: an idle keep-alive connection, or one already closing (uvicorn
        closes a connection idle for its keep-alive timeout with the TLS close_notify
        exchange), is dropped. Pooled clients do not read idle connections, so they never
        answer close_notify, and uvicorn would wait its whole graceful-shutdown timeout
        for them. A connection with a request in flight finishes its response first."""
        cycle = getattr(self, "cycle", None)
        self._shutting_down = True
        if cycle is None or cycle.response_complete or self.transport.is_closing():  # type: ignore[attr-defined]
            self.transport.abort()  # type: ignore[attr-defined]
            return
        super().shutdown()  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if self._shutting_down:
            # the response is out and the connection is closing: drop it once the bytes
            # left (no close_notify exchange a pooled client never answers)
            _abort_when_sent(self.loop, self.transport)  # type: ignore[attr-defined]

    def connection_scope(self, transport) -> tuple[dict, dict]:
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        cas = getattr(self.config, "client_cas", None)  # type: ignore[attr-defined]
        return tls_extension(peer_from_der(der, cas))


class PeerH11Protocol(_PeerMixin, H11Protocol):
    """h11 protocol that exposes the client certificate."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class PeerHttpToolsProtocol(_PeerMixin, HttpToolsProtocol):
        """httptools protocol that exposes the client certificate."""

    DEFAULT_PROTOCOL: type = PeerHttpToolsProtocol
except ImportError:  # httptools is optional
    DEFAULT_PROTOCOL = PeerH11Protocol


def parse_listen_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or not parts.port:
        raise CertifiedError(f"listen address {url!r} must look like https://HOST:PORT")
    return parts.hostname, parts.port


def load_app(app: Any, factory: bool = False) -> Any:
    """Import `module:attr` (cwd importable); call it when it is a factory."""
    if isinstance(app, str):
        mod_name, _, attr = app.partition(":")
        if not attr:
            raise CertifiedError(f"app {app!r} must look like module:attribute")
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            obj: Any = importlib.import_module(mod_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise CertifiedError(f"cannot load app {app!r}: {exc}") from None
        app = obj
    return app() if factory else app


def build_config(
    app: Any,
    url: str,
    *,
    certified: Certified,
    crl: str | None = None,
    crl_refresh: float = 10.0,
    factory: bool = False,
    log_level: str = "info",
    http: type | None = None,
) -> uvicorn.Config:
    """A uvicorn Config serving `app` over mTLS at `url` (errors raised before binding)."""
    host, port = parse_listen_url(url)
    ctx = certified.ssl_context(server=True)
    clients = certified.trusted_clients()
    revocation = RevocationList(crl, [c.cert for c in clients], crl_refresh) if crl else None
    if revocation is not None:
        try:
            refuse_revoked(ctx, revocation.is_revoked_certificate)
        except (OSError, AttributeError, RuntimeError) as exc:  # an unusual libssl/CPython
            log.warning(
                "revoked clients get 403 after the handshake instead of a TLS alert",
                extra={"error": str(exc)},
            )
    wrapped = CertifiedMiddleware(load_app(app, factory), revocation)
    # TLS is done by the protocol (so refused clients get their alert), not by uvicorn:
    # uvicorn's start-up line therefore says http://, but every connection is mTLS.
    config = uvicorn.Config(
        wrapped,
        host=host,
        port=port,
        http=alerting_protocol_factory(http or DEFAULT_PROTOCOL, ctx),
        log_config=None,
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=10,
    )
    config.client_cas = clients  # read by _PeerMixin per connection
    return config


def run_uvicorn(config: uvicorn.Config) -> None:
    """Run until SIGINT/SIGTERM; a signal-initiated clean shutdown returns normally (exit 0).

    Uvicorn drains in-flight requests, restores the previous signal handlers and re-raises
    the signal; the no-op handlers installed here absorb it."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(config).run()


def run_server(app: Any, url: str, *, certified: Certified, **kwargs: Any) -> None:
    """Serve over mTLS until SIGINT/SIGTERM (in-flight requests finish first)."""
    configure_json_logging(kwargs.get("log_level", "info"))
    config = build_config(app, url, certified=certified, **kwargs)
    log.info("serving %s: mTLS, TLS 1.3, client certificate required", url)
    run_uvicorn(config)


def run_unix_server(app: Any, path: Path, *, http: type, log_level: str = "info") -> None:
    """Serve plain HTTP on a UNIX socket (the signer: the kernel, not TLS, says who
    calls) with the suite's JSON logs, until SIGINT/SIGTERM."""
    configure_json_logging(log_level)
    config = uvicorn.Config(
        app, uds=str(path), http=http, log_config=None, access_log=False, log_level=log_level
    )
    run_uvicorn(config)
