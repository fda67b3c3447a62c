"""Deliver signed callbacks: POST the Callback JSON, retrying with exponential backoff."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .models import Callback, CallbackPolicy
from .signing import HEADER, sign, verify

if TYPE_CHECKING:
    import httpx

__all__ = ["backoff_delays", "deliver", "read_callback", "verify"]


def backoff_delays(policy: CallbackPolicy) -> list[float]:
    """The waits between attempts: doubling from first_delay, capped, within give_up_after."""
    delays: list[float] = []
    delay, total = policy.first_delay, 0.0
    while total + delay <= policy.give_up_after:
        delays.append(delay)
        total += delay
        delay = min(delay * 2, policy.max_delay)
    return delays


def _client(url: str, certified: Path | None, timeout: float) -> tuple[httpx.Client, str]:
    """A client for `url` and the URL to post to (a certified nickname resolved and pinned)."""
    import httpx  # imported here: jobs without callbacks start faster

    if certified is not None and url.startswith("https://"):
        from certified import Certified

        ident = Certified(certified)
        target, pinned = ident.resolve(url)
        return httpx.Client(verify=ident.ssl_context(False, pinned=pinned), timeout=timeout), target
    return httpx.Client(timeout=timeout), url


def deliver(
    url: str,
    cb: Callback,
    secret: str | None,
    policy: CallbackPolicy,
    certified: Path | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    sleep: Callable[[float], None] = time.sleep,
    extra_headers: Mapping[str, str] | None = None,
) -> bool:
    """POST `cb` to `url`; True once a 2xx arrives, False after giving up. Never raises.

    Connection errors, timeouts, 408, 429 and 5xx are retried after each of
    backoff_delays(policy); any other status is final (the receiver said no).
    `extra_headers` (the JobSpec's cb_headers) go with every attempt.
    """
    body = cb.model_dump_json().encode()
    headers = dict(extra_headers or {})
    headers["content-type"] = "application/json"
    if secret is not None:
        headers[HEADER] = sign(secret, body)
    delays = backoff_delays(policy)
    try:
        client, target = _client(url, certified, policy.timeout)
    except Exception as exc:  # a broken identity must not crash the job
        log(f"callback {cb.state.value} to {url}: cannot build client: {exc}")
        return False
    import httpx

    with client:
        for attempt in range(len(delays) + 1):
            try:
                resp = client.post(target, content=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if resp.is_success:
                    return True
                problem = f"HTTP {resp.status_code}"
                if resp.status_code not in (408, 429) and resp.status_code < 500:
                    log(f"callback {cb.state.value} to {url} refused: {problem}")
                    return False
            if attempt == len(delays):
                break
            log(f"callback {cb.state.value} to {url} failed ({problem}); retry {attempt + 1}")
            sleep(delays[attempt])
    log(f"callback {cb.state.value} to {url}: giving up after {len(delays) + 1} attempts")
    return False


def read_callback(secret: str, body: bytes, header: str | None) -> Callback:
    """For receivers: the Callback in `body` if `header` signs it under `secret`.

    Raises PermissionError on a missing or wrong signature and ValueError on a body that
    is not a Callback.
    """
    if not verify(secret, body, header):
        raise PermissionError("missing or wrong x-hub-signature-256")
    return Callback.model_validate_json(body)
