"""HMAC-SHA256 signatures of callback bodies (the `x-hub-signature-256` header)."""

from __future__ import annotations

import hashlib
import hmac

HEADER = "x-hub-signature-256"
PREFIX = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The header value for `body`: `sha256=<hex HMAC-SHA256(secret, body)>`."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return PREFIX + digest


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """True when `header` is the signature of exactly `body` under `secret` (constant time)."""
    if not header or not header.startswith(PREFIX):
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode())
