"""psik-api's Prometheus metrics, in a registry of their own (one per app), all read at
scrape time: jobs by state from the listing index, the callback workers' queue and what
they delivered and gave up on."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from certified.metrics import by_state

from ..index import JobIndex
from ..models import JobState
from ..outbox import Dispatcher


class _PsikState(Collector):
    def __init__(self, index: JobIndex, dispatcher: Dispatcher) -> None:
        self.index = index
        self.dispatcher = dispatcher

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        counts = self.index.counts()
        yield by_state("psik_jobs", "Jobs by the state of their latest run", counts, JobState)
        st = self.dispatcher.stats()
        yield GaugeMetricFamily(
            "psik_callback_queue_jobs",
            "Jobs whose callbacks wait for a worker (queued or behind their destination)",
            value=st.waiting,
        )
        yield GaugeMetricFamily(
            "psik_callback_busy_destinations",
            "Destinations a worker is delivering to (retrying, for one that is down)",
            value=st.busy,
        )
        yield GaugeMetricFamily(
            "psik_callback_deferred_jobs",
            "Jobs the full queue deferred, waiting for the reconciler to queue them again",
            value=st.deferred_now,
        )
        yield CounterMetricFamily(
            "psik_callback_deferrals", "Times a job was deferred by the full queue", st.deferred
        )
        yield CounterMetricFamily(
            "psik_callbacks_delivered", "Callbacks the workers delivered", st.delivered
        )
        yield CounterMetricFamily(
            "psik_callback_failures",
            "Callbacks the workers gave up on (recorded in the job's callbacks.failed)",
            st.failed,
        )


def api_registry(index: JobIndex, dispatcher: Dispatcher) -> CollectorRegistry:
    """A registry for one psik-api app."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_PsikState(index, dispatcher))
    return registry
