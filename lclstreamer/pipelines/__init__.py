"""Processing pipelines beyond plain batching; each maps events, then batches them."""

from __future__ import annotations

from collections.abc import Iterator

from ..models import BatchPipeline as BatchConfig
from ..pipeline import BatchPipeline
from ..protocols import Batch, Event


def batched(events: Iterator[Event], batch_size: int) -> Iterator[Batch]:
    """The `batch` pipeline over already transformed events."""
    return BatchPipeline(BatchConfig(type="batch", batch_size=batch_size), None)(events)
