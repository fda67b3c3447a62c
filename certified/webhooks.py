"""Signed webhooks, the suite's one implementation: sign, verify, allow, deliver.

A webhook is a POST of a JSON body with the header
`x-hub-signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>`. Senders deliver with
`WebhookSender` (retries with backoff; https goes over mTLS as the sender's certified
identity, with nickname URLs resolved and pinned) and only to destinations the operator
allowed (`Destinations`); `Poster` queues bodies for one URL on a thread of its own.
Receivers check with `verify` or, in FastAPI, the `signed_body(secret)` dependency.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from .errors import CertifiedError
from .layout import NAME_RE

if TYPE_CHECKING:
    import httpx
    from fastapi import Request

    from .identity import Certified

__all__ = [
    "HEADER",
    "Destinations",
    "nickname_url",
    "Outcome",
    "Poster",
    "RetryPolicy",
    "WebhookSender",
    "sign",
    "signed_body",
    "verify",
]

HEADER = "x-hub-signature-256"
PREFIX = "sha256="

log = logging.getLogger("certified.webhooks")


def sign(secret: str, body: bytes) -> str:
    """The header value for `body`: `sha256=<hex HMAC-SHA256(secret, body)>`."""
    return PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """True when `header` signs exactly `body` under `secret` (constant-time compare)."""
    if not header or not header.startswith(PREFIX):
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode())


def signed_body(
    secret: str | Callable[[Request], str | Awaitable[str]],
) -> Callable[[Request], Awaitable[bytes]]:
    """A FastAPI dependency giving the raw body once its signature checks out (else 401).

    `secret` is the key, or a function of the request returning it (e.g. a per-transfer
    secret looked up from the path); an unknown sender should raise HTTPException there.
    """
    import inspect

    from fastapi import HTTPException
    from fastapi import Request as _Request  # imported here: senders need no FastAPI

    async def dependency(request) -> bytes:
        key = secret(request) if callable(secret) else secret
        if inspect.isawaitable(key):
            key = await key
        body = await request.body()
        if not verify(key, body, request.headers.get(HEADER)):
            raise HTTPException(401, detail=f"missing or wrong {HEADER}")
        return body

    dependency.__annotations__["request"] = _Request  # FastAPI injects by this type
    return dependency


class RetryPolicy(BaseModel):
    """How hard to try one delivery: per-attempt timeout, then doubling waits."""

    model_config = ConfigDict(extra="forbid")

    timeout: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 10.0
    first_delay: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 0.5
    max_delay: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 30.0
    give_up_after: Annotated[float, Field(ge=0, le=86400, allow_inf_nan=False)] = 120.0

    def delays(self) -> list[float]:
        """The waits between attempts: doubling from first_delay, capped at max_delay,
        summing to at most give_up_after."""
        out: list[float] = []
        delay, total = self.first_delay, 0.0
        while total + delay <= self.give_up_after:
            out.append(delay)
            total += delay
            delay = min(delay * 2, self.max_delay)
        return out

    def worst_case(self) -> float:
        """Seconds one delivery can take at most (every attempt timing out)."""
        delays = self.delays()
        return (len(delays) + 1) * self.timeout + sum(delays)


def _nickname(entry: str) -> bool:
    """A service nickname, as `Certified.resolve` recognises one in a URL's host."""
    return bool(NAME_RE.match(entry)) and "." not in entry


def nickname_url(url: str) -> bool:
    """True for `https://NICKNAME/...`: a service the identity's operator registered."""
    parts = urlsplit(url)
    return parts.scheme == "https" and _nickname(parts.netloc)


class Destinations:
    """The operator's allow-list of webhook destinations.

    An entry is a service nickname (`lclstream` allows `https://lclstream/...`, resolved
    and pinned through the sender's trusted services) or a URL prefix
    (`https://host:8443/hooks/` allows that scheme, host and port, and paths below it).
    `None` allows everything (a user's own tool, where the user is the operator).
    """

    def __init__(self, allowed: Sequence[str] | None) -> None:
        self.allowed = None if allowed is None else list(allowed)
        for entry in self.allowed or []:
            if not _nickname(entry) and urlsplit(entry).scheme not in ("http", "https"):
                raise CertifiedError(
                    f"allowed destination {entry!r} is neither a service nickname"
                    " nor an http(s):// URL prefix"
                )

    def allows(self, url: str) -> bool:
        if self.allowed is None:
            return True
        parts = urlsplit(url)
        for entry in self.allowed:
            if _nickname(entry):
                if parts.scheme == "https" and parts.netloc == entry:
                    return True
                continue
            want = urlsplit(entry)
            if (parts.scheme, parts.netloc.lower()) != (want.scheme, want.netloc.lower()):
                continue
            prefix = want.path.rstrip("/")
            if parts.path == prefix or parts.path.startswith(prefix + "/"):
                return True
        return False

    def check(self, url: str) -> None:
        """Raise CertifiedError unless `url` is allowed."""
        if not self.allows(url):
            shown = ", ".join(self.allowed or []) or "none"
            raise CertifiedError(f"callback destination {url!r} is not allowed (allowed: {shown})")


@dataclass(frozen=True)
class Outcome:
    """How one delivery ended."""

    delivered: bool
    attempts: int
    reason: str  # "" when delivered


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 429)


class WebhookSender:
    """Delivers signed webhooks to allowed destinations; safe to share between threads.

    https URLs go over mTLS as `certified` (when given), nickname URLs resolved and
    pinned; http URLs, or any URL without an identity, go with a plain client. A
    destination the allow-list does not name is never contacted.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        certified: Certified | Path | None = None,
        allowed: Destinations | Sequence[str] | None = None,
    ) -> None:
        self.policy = policy
        self.destinations = allowed if isinstance(allowed, Destinations) else Destinations(allowed)
        if certified is not None and not hasattr(certified, "client"):
            from .identity import Certified

            certified = Certified(certified)
        self._certified = certified
        self._lock = threading.Lock()
        self._plain: httpx.Client | None = None
        self._mtls: httpx.Client | None = None

    def _client(self, url: str) -> httpx.Client:
        import httpx

        with self._lock:
            if url.startswith("https://") and self._certified is not None:
                if self._mtls is None:
                    self._mtls = self._certified.client(timeout=self.policy.timeout)
                return self._mtls
            if self._plain is None:
                self._plain = httpx.Client(timeout=self.policy.timeout)
            return self._plain

    def send(
        self,
        url: str,
        body: bytes,
        secret: str | None,
        *,
        what: str = "webhook",
        stop: Callable[[float], bool] | None = None,
        note: Callable[[str], None] | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Outcome:
        """POST `body` to `url` until a 2xx, a final refusal, or the retry budget ends.

        Connection errors, timeouts, 408, 429 and 5xx are retried after each of
        `policy.delays()`; other statuses are final. `stop(delay)` waits between
        attempts and returns True to give up early (default: sleep). `extra_headers` (a
        JobSpec's cb_headers) go with every attempt; the content type and signature are
        always ours. Each retry and the end of a failed delivery are logged, and also given
        to `note`. Never raises.
        """
        import httpx

        def say(level: int, msg: str) -> None:
            log.log(level, msg)
            if note is not None:
                note(msg)

        if not self.destinations.allows(url):
            reason = "destination not allowed by the operator"
            say(logging.WARNING, f"{what} to {url} not sent: {reason}")
            return Outcome(False, 0, reason)
        headers = dict(extra_headers or {})
        headers["content-type"] = "application/json"
        if secret is not None:
            headers[HEADER] = sign(secret, body)
        try:
            client = self._client(url)
        except Exception as exc:  # a broken identity is reported, not raised
            return Outcome(False, 0, f"cannot build a client: {exc}")
        delays = self.policy.delays()
        wait = stop or (lambda d: bool(time.sleep(d)))
        reason = ""
        for attempt in range(1, len(delays) + 2):
            try:
                resp = client.post(url, content=body, headers=headers)
            except (httpx.HTTPError, CertifiedError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if resp.is_success:
                    return Outcome(True, attempt, "")
                reason = f"HTTP {resp.status_code}"
                if not _retryable(resp.status_code):
                    say(logging.WARNING, f"{what} to {url} refused: {reason} (not retried)")
                    return Outcome(False, attempt, f"refused: {reason}")
            if attempt > len(delays):
                break
            say(logging.INFO, f"{what} to {url} failed ({reason}); retry {attempt}")
            if wait(delays[attempt - 1]):
                break
        say(logging.WARNING, f"{what} to {url} failed after {attempt} attempts: {reason}")
        return Outcome(False, attempt, reason)

    def close(self) -> None:
        with self._lock:
            for client in (self._plain, self._mtls):
                if client is not None:
                    client.close()
            self._plain = self._mtls = None


class Poster:
    """Posts bodies to one URL, in submission order, from a thread of its own.

    `post` never blocks: beyond `max_pending` waiting bodies the oldest is dropped and
    counted in `dropped`; `delivered` and `failed` count the rest.
    """

    def __init__(
        self, sender: WebhookSender, url: str, secret: str | None, max_pending: int = 100
    ) -> None:
        self.sender = sender
        self.url = url
        self._secret = secret
        self.max_pending = max_pending
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._closing = threading.Event()
        self.delivered = self.failed = self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="webhook-poster", daemon=True)
        self._thread.start()

    def post(self, body: bytes) -> None:
        while self._queue.qsize() >= self.max_pending:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            self.dropped += 1
            log.warning("webhook to %s is behind: dropped the oldest pending body", self.url)
        self._queue.put(body)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (retries cut short after `timeout` seconds), then stop."""
        self._queue.put(None)
        self._thread.join(timeout)
        self._closing.set()
        self._thread.join(self.sender.policy.timeout + 1.0)
        self.sender.close()

    def _run(self) -> None:
        while (body := self._queue.get()) is not None:
            outcome = self.sender.send(
                self.url, body, self._secret, what="callback", stop=self._closing.wait
            )
            if outcome.delivered:
                self.delivered += 1
            else:
                self.failed += 1
