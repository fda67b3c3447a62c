"""Signed callbacks: POST a JSON body with `x-hub-signature-256: sha256=<HMAC-SHA256>`,
in order, from a background thread, retried with backoff."""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import threading
from pathlib import Path

import httpx

log = logging.getLogger("nngstream.callback")

SIGNATURE_HEADER = "x-hub-signature-256"
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)  # after attempts 1..4; attempt 5 is the last
MAX_PENDING = 100


def sign(body: bytes, secret: str) -> str:
    """The header value that proves `body` came from a holder of `secret`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header: str | None) -> bool:
    """Whether `header` is the signature of `body` under `secret` (constant time)."""
    return header is not None and hmac.compare_digest(sign(body, secret), header)


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 429)


class CallbackPoster:
    """Posts bodies to one URL in submission order; never blocks the caller."""

    def __init__(
        self, url: str, secret: str, certified_config: Path | None = None, timeout: float = 10.0
    ) -> None:
        self.url = url
        self._secret = secret
        if certified_config is not None:
            from certified.identity import Certified

            # the URL as base: certified resolves a service nickname and pins its cert
            self._client = Certified(certified_config).client(url, timeout=timeout)
            self._target = ""
        else:
            self._client = httpx.Client(timeout=timeout)
            self._target = url
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._closing = threading.Event()
        self.delivered = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="callback", daemon=True)
        self._thread.start()

    def post(self, body: bytes) -> None:
        """Queue `body`; beyond MAX_PENDING waiting bodies the oldest is dropped."""
        while self._queue.qsize() >= MAX_PENDING:
            try:
                self._queue.get_nowait()
                log.warning("callback to %s is behind: dropped the oldest pending body", self.url)
            except queue.Empty:
                break
        self._queue.put(body)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (retries cut short after `timeout` seconds), then stop."""
        self._queue.put(None)
        self._thread.join(timeout)
        self._closing.set()
        self._thread.join(2.0)
        self._client.close()

    def _run(self) -> None:
        while (body := self._queue.get()) is not None:
            if self._send(body):
                self.delivered += 1
            else:
                self.failed += 1

    def _send(self, body: bytes) -> bool:
        headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(body, self._secret)}
        for attempt, delay in enumerate((*RETRY_DELAYS, None), start=1):
            try:
                resp = self._client.post(self._target, content=body, headers=headers)
                if resp.is_success:
                    return True
                reason = f"HTTP {resp.status_code}"
                if not _retryable(resp.status_code):
                    log.warning("callback to %s refused: %s (not retried)", self.url, reason)
                    return False
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if delay is None or self._closing.wait(delay):
                log.warning(
                    "callback to %s failed after %d attempts: %s", self.url, attempt, reason
                )
                return False
            log.info(
                "callback to %s failed (%s); retry %d in %gs", self.url, reason, attempt, delay
            )
        return False
