"""lclstream-api's Prometheus metrics, in a registry of their own (one per app).

Counters (what the transfers carried) are fed by the buffers' metrics reports: each report
holds cumulative counts, and only what a report adds to the same buffer's last stored
report is counted (`progress`), so repeated, late and reordered reports count nothing twice
and a restart of the service does not count again what was counted before it (the last
report is in the database; the counters themselves start at zero with the process, as
Prometheus expects). Events are counted from the producer job's own summary when it
completes (the buffer never looks inside a batch). Gauges (transfers by state, buffer
fill) are read from the store at scrape time, aggregated over the live transfers: a label
per transfer would make a new series for every transfer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from certified.metrics import by_state
from nngstream.models import Metrics

from .models import TransferState
from .store import Store

#: cumulative fields of a buffer report and the counter each one feeds.
COUNTED = {
    "bytes_in": ("lclstream_buffer_received_bytes", "Bytes buffers received from producers"),
    "bytes_out": ("lclstream_buffer_sent_bytes", "Bytes buffers handed to consumers"),
    "recvd": ("lclstream_buffer_received_messages", "Messages (batches) buffers received"),
    "sent": ("lclstream_buffer_sent_messages", "Messages (batches) buffers handed to consumers"),
    "dropped": ("lclstream_buffer_dropped_messages", "Messages buffers dropped by a drop policy"),
}

CallbackError = Literal["unknown_transfer", "bad_signature", "invalid_body"]
ReconcilerError = Literal["job_state", "pass"]


def progress(prev: Metrics | None, new: Metrics) -> dict[str, int] | None:
    """What `new` adds to each cumulative count of `prev`, the same buffer's last report.

    None for a report not newer than `prev` (a duplicate or a late one: nothing counts);
    a count lower than `prev`'s in a newer report means the buffer started over, so all
    of it counts."""
    if prev is None:
        return {k: getattr(new, k) for k in COUNTED}
    if new.time <= prev.time:
        return None
    out = {}
    for k in COUNTED:
        before, now = getattr(prev, k), getattr(new, k)
        out[k] = now - before if now >= before else now
    return out


class _LiveState(Collector):
    """Gauges computed at scrape time from the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self.store.count_by_state()
        yield by_state("lclstream_transfers", "Transfers by state", counts, TransferState)
        buffered = buffered_msgs = capacity = blocked = consumers = producers = 0
        fill = 0.0
        for tid in self.store.live():
            t = self.store.get(tid)
            if t is None:
                continue
            for role, m in t.metrics.items():
                if not role.startswith("buffer"):
                    continue
                buffered += m.buffered_bytes
                buffered_msgs += m.buffered
                capacity += t.options.max_buffer_bytes
                fill = max(fill, m.buffered_bytes / t.options.max_buffer_bytes)
                blocked += m.blocked
                consumers += m.consumers
                producers += m.producers
        gauges = [
            ("lclstream_buffered_bytes", "Bytes held by the live transfers' buffers", buffered),
            ("lclstream_buffered_messages", "Messages held by live buffers", buffered_msgs),
            ("lclstream_buffer_capacity_bytes", "Capacity of the live buffers", capacity),
            ("lclstream_buffer_fill_ratio_max", "Fill (0..1) of the fullest live buffer", fill),
            ("lclstream_buffers_blocked", "Live buffers full with no consumer", blocked),
            ("lclstream_consumers_connected", "Consumers connected to live buffers", consumers),
            ("lclstream_producers_connected", "Producers connected to live buffers", producers),
        ]
        for name, doc, value in gauges:
            yield GaugeMetricFamily(name, doc, value=value)


class ApiMetrics:
    """The app's registry and the counters the service and the routes move."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.counted = {
            field: Counter(name, doc, registry=self.registry)
            for field, (name, doc) in COUNTED.items()
        }
        self.events = Counter(
            "lclstream_events_streamed",
            "Events producer jobs report sent (counted when a producer job completes)",
            registry=self.registry,
        )
        self.skipped = Counter(
            "lclstream_events_skipped",
            "Events producer jobs report skipped (incomplete events)",
            registry=self.registry,
        )
        self.callback_errors = Counter(
            "lclstream_callback_errors",
            "Callbacks refused: unknown transfer or role, bad signature, unreadable body",
            ["reason"],
            registry=self.registry,
        )
        self.reconciler_errors = Counter(
            "lclstream_reconciler_errors",
            "Reconciler failures: a job's state not obtained, or a whole pass failed",
            ["kind"],
            registry=self.registry,
        )
        for reason in get_args(CallbackError):
            self.callback_errors.labels(reason)
        for kind in get_args(ReconcilerError):
            self.reconciler_errors.labels(kind)
        self.registry.register(_LiveState(store))

    def buffer_report(self, prev: Metrics | None, new: Metrics) -> None:
        """Count what a buffer's report adds to its last stored one (see `progress`)."""
        added = progress(prev, new)
        if added is None:
            return
        for field, n in added.items():
            if n:
                self.counted[field].inc(n)

    def producer_summary(self, events: int, skipped: int) -> None:
        self.events.inc(events)
        self.skipped.inc(skipped)

    def callback_error(self, reason: CallbackError) -> None:
        self.callback_errors.labels(reason).inc()

    def reconciler_error(self, kind: ReconcilerError) -> None:
        self.reconciler_errors.labels(kind).inc()
