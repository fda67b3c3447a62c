"""Prometheus plumbing the suite's services share: the access-checked `GET /metrics`
route over a per-app registry, and gauges by state."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from enum import StrEnum

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from .asgi import Identity


def add_metrics_route(app: FastAPI, registry: CollectorRegistry, readers: Collection[str]) -> None:
    """`GET /metrics`: `registry` in Prometheus' text format, for the identities in
    `readers` only (403 for any other, as for every route a certificate is required)."""

    @app.get("/metrics", response_class=Response, include_in_schema=False)
    def metrics(identity: Identity) -> Response:
        if identity not in readers:
            raise HTTPException(403, detail=f"{identity} may not read metrics (metrics_readers)")
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def by_state(
    name: str, doc: str, counts: Mapping[StrEnum, int], states: Iterable[StrEnum]
) -> GaugeMetricFamily:
    """A gauge with one `state` label per member of `states` (0 where `counts` has none,
    so every series exists from the start)."""
    gauge = GaugeMetricFamily(name, doc, labels=["state"])
    for state in states:
        gauge.add_metric([state.value], counts.get(state, 0))
    return gauge
