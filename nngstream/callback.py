"""Metrics callbacks: signed JSON bodies posted in order from a thread of their own.

Signing, retries and the allow-list live in `certified.webhooks` (one implementation for
the suite); this module only fixes nngstream's retry budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from certified.webhooks import Poster, RetryPolicy, WebhookSender

#: 5 attempts over 7.5 s of waiting (0.5, 1, 2, 4 s apart): metrics go stale quickly.
POLICY = RetryPolicy(timeout=10.0, first_delay=0.5, max_delay=4.0, give_up_after=7.5)


class CallbackPoster(Poster):
    """Posts bodies to `url` in order, as `certified_config`'s identity for https.

    `allowed` is the operator's allow-list (None: the caller checked the URL already).
    """

    def __init__(
        self,
        url: str,
        secret: str,
        certified_config: Path | None = None,
        allowed: Sequence[str] | None = None,
    ) -> None:
        super().__init__(WebhookSender(POLICY, certified_config, allowed), url, secret)
