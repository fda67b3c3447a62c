"""Counters the engine keeps and the metrics record computed from them."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .lifecycle import State
from .models import Metrics


@dataclass
class Counters:
    """The pump's counters: `recvd` and `bytes_in` are written by the receiving thread;
    `sent`, `bytes_out` and `dropped` under the pump's lock (by the sending thread, or by
    the receiving thread when it hands a message over directly or drops one)."""

    recvd: int = 0
    bytes_in: int = 0
    dropped: int = 0
    sent: int = 0
    bytes_out: int = 0


class RateMeter:
    """bytes/s in and out between consecutive reports."""

    def __init__(self) -> None:
        self._t = time.monotonic()
        self._in = 0
        self._out = 0

    def rates(
        self, bytes_in: int, bytes_out: int, update: bool = True, now: float | None = None
    ) -> tuple[float, float]:
        """Rates since the last update; `update` starts a new interval."""
        now = time.monotonic() if now is None else now
        dt = now - self._t
        if dt <= 0:
            return 0.0, 0.0
        r_in, r_out = (bytes_in - self._in) / dt, (bytes_out - self._out) / dt
        if update:
            self._t, self._in, self._out = now, bytes_in, bytes_out
        return r_in, r_out


def snapshot(
    state: State,
    producers: int,
    consumers: int,
    c: Counters | None,
    buffered: int,
    buffered_bytes: int,
    rates: tuple[float, float],
    **extra: object,
) -> Metrics:
    """The metrics record; `extra` holds the fields beyond the counters (lost_max, ...)."""
    c = c or Counters()
    return Metrics(
        **extra,  # type: ignore[arg-type]
        time=round(time.time(), 3),
        state=state,
        producers=producers,
        consumers=consumers,
        recvd=c.recvd,
        sent=c.sent,
        dropped=c.dropped,
        buffered=buffered,
        buffered_bytes=buffered_bytes,
        bytes_in=c.bytes_in,
        bytes_out=c.bytes_out,
        rate_in=round(rates[0], 1),
        rate_out=round(rates[1], 1),
    )
