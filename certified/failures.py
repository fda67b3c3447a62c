"""One sentence for an HTTPS request that got no response, the same in every client.

A server that refuses the TLS handshake, one that cannot be reached and one that
accepted the request but did not answer in time are different problems for an
operator (a wrong certificate, a service that is down, a service stuck behind
something slow such as a batch system); each gets its own wording here.
"""

from __future__ import annotations

import httpx

from .handshake import received_alert


def request_failure(service: str, request: str, exc: BaseException, timeout: httpx.Timeout) -> str:
    """Why `request` ("POST /jobs") to `service` (a name or URL) got no response: `exc`
    is what httpx raised, `timeout` the client's timeouts."""
    alert = received_alert(exc)
    if alert is not None:
        return f"{service} refused the TLS handshake: {alert}"
    if isinstance(exc, httpx.ConnectTimeout):
        return f"{service} did not accept a connection within {_seconds(timeout.connect)}"
    if isinstance(exc, httpx.TimeoutException):
        return f"{service} did not answer {request} within {_seconds(timeout.read)}"
    return f"{service} is unreachable: {exc or type(exc).__name__}"


def _seconds(value: float | None) -> str:
    return "its timeout" if value is None else f"{value:g} s"
