"""TLS handshakes that tell a refused client why: the alert reaches it, the server logs it.

Two gaps in the standard library are closed here, both server side:

* asyncio's SSL protocol aborts the connection when a handshake fails without writing
  the alert OpenSSL has just produced, so a client without a certificate, or with an
  untrusted one, sees a reset instead of `certificate required` (116) or `unknown ca`
  (48). `AlertingSSLProtocol` sends those bytes (and a FIN) before the connection is
  dropped, and logs one `certified.tls` JSON line with the peer and the reason.
* Python's `ssl` has no certificate-verification callback, so a revoked certificate
  could only be refused after the handshake (HTTP 403). `refuse_revoked` installs an
  OpenSSL verify callback (through ctypes, on the context's `SSL_CTX`) that fails the
  leaf with X509_V_ERR_CERT_REVOKED; OpenSSL then sends `certificate revoked` (44).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import re
import socket
import ssl
from asyncio import sslproto
from collections.abc import Callable
from typing import Any

from cryptography import x509

log = logging.getLogger("certified.tls")

X509_V_ERR_CERT_REVOKED = 23
X509_V_ERR_APPLICATION_VERIFICATION = 50


def refusal_reason(exc: BaseException | type[BaseException]) -> str:
    """A short reason for a failed handshake, as OpenSSL names it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or "certificate verify failed"
    if isinstance(exc, ssl.SSLError):
        return (exc.reason or str(exc)).lower().replace("_", " ")
    if isinstance(exc, type):
        return exc.__name__
    return str(exc) or type(exc).__name__


class AlertingSSLProtocol(sslproto.SSLProtocol):
    """asyncio's server-side SSL protocol, but a failed handshake sends its alert first."""

    def _on_handshake_complete(self, handshake_exc):  # type: ignore[override]
        # An SSLError is a refusal (OpenSSL wrote an alert); anything else means the
        # peer left or timed out mid-handshake (a port probe, say): nothing to tell it.
        if isinstance(handshake_exc, ssl.SSLError) and self._transport is not None:
            peer = self._transport.get_extra_info("peername")
            try:
                alert = self._outgoing.read()
                if alert:
                    self._transport.write(alert)  # a fresh socket takes a few bytes at once
                sock = self._transport.get_extra_info("socket")
                if sock is not None:
                    sock.shutdown(socket.SHUT_WR)
            except (OSError, AttributeError):
                pass  # the peer is gone already: nothing to tell it
            log.warning(
                "refused TLS handshake",
                extra={
                    "peer": f"{peer[0]}:{peer[1]}" if peer else None,
                    "reason": refusal_reason(handshake_exc),
                },
            )
        super()._on_handshake_complete(handshake_exc)


def alerting_protocol_factory(
    protocol_factory: Callable[..., asyncio.BaseProtocol],
    context: ssl.SSLContext,
    handshake_timeout: float = 60.0,  # asyncio's default, as uvicorn had it
) -> Callable[..., asyncio.BaseProtocol]:
    """A protocol factory for `loop.create_server(..., ssl=None)` that speaks TLS with
    `context` through `AlertingSSLProtocol` and hands the plaintext to `protocol_factory`'s
    protocol (keyword arguments are passed on to it)."""

    def make(**kwargs: Any) -> asyncio.BaseProtocol:
        return AlertingSSLProtocol(
            asyncio.get_running_loop(),
            protocol_factory(**kwargs),
            context,
            None,
            server_side=True,
            ssl_handshake_timeout=handshake_timeout,
        )

    return make


# -- verify callback ---------------------------------------------------------------
_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


def _libssl() -> ctypes.CDLL:
    """The OpenSSL that Python's `_ssl` module is linked against."""
    import _ssl

    lib = ctypes.CDLL(_ssl.__file__)
    lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CB]
    lib.SSL_CTX_set_verify.restype = None
    lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
    lib.X509_STORE_CTX_get_error_depth.argtypes = [ctypes.c_void_p]
    lib.X509_STORE_CTX_get_error_depth.restype = ctypes.c_int
    lib.X509_STORE_CTX_get_current_cert.argtypes = [ctypes.c_void_p]
    lib.X509_STORE_CTX_get_current_cert.restype = ctypes.c_void_p
    lib.X509_STORE_CTX_set_error.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.X509_STORE_CTX_set_error.restype = None
    lib.i2d_X509.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.i2d_X509.restype = ctypes.c_int
    return lib


def _ssl_ctx_pointer(context: ssl.SSLContext) -> int:
    """The `SSL_CTX *` of a context: CPython's PySSLContext holds it right after its
    object header (unchanged from 3.7 to 3.13)."""
    ptr = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not ptr:
        raise RuntimeError("cannot find the SSL_CTX of this ssl.SSLContext")
    return ptr


def _der(lib: ctypes.CDLL, cert_ptr: int) -> bytes:
    size = lib.i2d_X509(cert_ptr, None)
    buf = ctypes.create_string_buffer(size)
    out = ctypes.c_void_p(ctypes.addressof(buf))
    lib.i2d_X509(cert_ptr, ctypes.byref(out))
    return buf.raw


#: The callbacks installed, kept alive as long as the process (one per server context).
_installed: list[Any] = []


def refuse_revoked(context: ssl.SSLContext, is_revoked: Callable[[x509.Certificate], bool]):
    """Make `context` fail the handshake of a client whose (otherwise valid) leaf
    certificate `is_revoked`, with the TLS alert `certificate revoked`.

    Set `verify_mode` before calling this (Python keeps the callback when it changes).
    An error inside the check refuses the client (fail closed) and is logged."""
    lib = _libssl()
    ctx_ptr = _ssl_ctx_pointer(context)

    def verify(preverify_ok: int, store: int) -> int:
        if not preverify_ok or lib.X509_STORE_CTX_get_error_depth(store) != 0:
            return preverify_ok
        try:
            der = _der(lib, lib.X509_STORE_CTX_get_current_cert(store))
            if not is_revoked(x509.load_der_x509_certificate(der)):
                return 1
            error = X509_V_ERR_CERT_REVOKED
        except Exception:  # fail closed: a broken revocation check admits nobody
            log.exception("revocation check failed; refusing the client")
            error = X509_V_ERR_APPLICATION_VERIFICATION
        lib.X509_STORE_CTX_set_error(store, error)
        return 0

    callback = _VERIFY_CB(verify)
    lib.SSL_CTX_set_verify(ctx_ptr, lib.SSL_CTX_get_verify_mode(ctx_ptr), callback)
    _installed.append((context, callback))
    return callback


# -- client side ---------------------------------------------------------------------
_ALERT_RE = re.compile(r"\[SSL: \w*?ALERT_(\w+)\]")
_ALERT_NUMBERS = {
    "handshake failure": 40,
    "bad certificate": 42,
    "certificate revoked": 44,
    "certificate expired": 45,
    "certificate unknown": 46,
    "unknown ca": 48,
    "access denied": 49,
    "certificate required": 116,
}


def received_alert(exc: BaseException) -> str | None:
    """The TLS alert a client received, from the error it raised (httpx, ssl), if any:
    e.g. ``certificate required (TLS alert 116)``."""
    match = _ALERT_RE.search(str(exc))
    if match is None:
        return None
    name = match.group(1).lower().replace("_", " ")
    number = _ALERT_NUMBERS.get(name)
    return f"{name} (TLS alert {number})" if number else name
