"""Wire the configured layers together and stream this rank's events."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from .errors import DataError
from .models import LclstreamerConfig
from .protocols import (
    Batch,
    Counting,
    DataHandler,
    DataSource,
    Event,
    EventSource,
    ProcessingPipeline,
    RawEvent,
    RunBracket,
    Serializer,
    StreamContext,
)
from .registry import build
from .stats import RankStats


def extract(
    raw_events: Iterator[RawEvent],
    sources: dict[str, DataSource],
    skip_incomplete: bool,
    stats: RankStats,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[Event]:
    """Events with every data source's value; incomplete events are skipped and counted,
    or are an error when `skip_incomplete` is False."""
    items = list(sources.items())
    for raw in raw_events:
        if stop():
            return
        data: dict[str, Any] = {}
        for name, get in items:
            value = get(raw)
            if value is None:
                if not skip_incomplete:
                    raise DataError(
                        f"event {raw.index} has no value for data source {name!r}"
                        " (set skip_incomplete_events: true to skip such events)"
                    )
                stats.skipped += 1
                break
            data[name] = value
        else:
            yield Event(raw.index, data)


@dataclass
class Engine:
    """The configured layers of one rank, opened and ready to stream."""

    cfg: LclstreamerConfig
    ctx: StreamContext
    source: EventSource
    sources: dict[str, DataSource]
    pipeline: ProcessingPipeline
    serializer: Serializer
    handlers: list[DataHandler]
    _stack: ExitStack = field(default_factory=ExitStack)

    @classmethod
    def open(cls, cfg: LclstreamerConfig, ctx: StreamContext) -> Engine:
        """Build every layer and enter the handlers (sockets listen/dial, directories exist)."""
        stack = ExitStack()
        try:
            source = build("event_source", cfg.event_source, ctx)
            stack.callback(source.close)
            run = source.run_info()
            sources = {
                name: build("data_sources", dcfg, ctx, run)
                for name, dcfg in cfg.data_sources.items()
            }
            pipeline = build("processing_pipeline", cfg.processing_pipeline, ctx)
            serializer = build("data_serializer", cfg.data_serializer, ctx, run)
            handlers = [
                stack.enter_context(build("data_handlers", h, ctx, serializer.suffix))
                for h in cfg.data_handlers
            ]
        except BaseException:
            stack.__exit__(None, None, None)
            raise
        return cls(cfg, ctx, source, sources, pipeline, serializer, handlers, stack)

    def stream(
        self,
        stats: RankStats,
        on_batch: Callable[[RankStats], None] = lambda s: None,
        stop: Callable[[], bool] = lambda: False,
    ) -> RankStats:
        """Stream every event of this rank, then close the handlers (which flush)."""
        start, cpu = time.monotonic(), time.process_time()
        bracket = self.serializer if isinstance(self.serializer, RunBracket) else None
        ctx = self.ctx
        with self._stack:
            handlers = self.handlers
            events = extract(
                self.source.events(), self.sources, self.cfg.skip_incomplete_events, stats, stop
            )
            batches = self.pipeline(events)
            if bracket is not None:
                if ctx.rank == 0:
                    first = next(batches, None)
                    self._send(bracket.opening(first), stats)
                    batches = itertools.chain([] if first is None else [first], batches)
                # no rank streams before the opening message was handed to the handlers
                bracket.join(ctx.allgather(bracket.series() if ctx.rank == 0 else None)[0])
            last: Batch | None = None
            for batch, message in _with_batches(batches, self.serializer):
                for handler in handlers:
                    handler.handle(message)
                if batch is not last:  # a serializer may make several messages per batch
                    stats.events += batch.n_events
                    stats.batches += 1
                    last = batch
                stats.bytes += len(message)
                on_batch(stats)
            for layer in (self.source, self.pipeline, self.serializer):
                if isinstance(layer, Counting):
                    stats.counters.update(layer.counters())
            if bracket is not None:
                if ctx.rank != 0:
                    self._stack.close()  # deliver everything before rank 0 ends the run
                total = sum(ctx.allgather(stats.events))
                if ctx.rank == 0:
                    self._send(bracket.closing(total), stats)
        stats.seconds = time.monotonic() - start
        stats.cpu_seconds = time.process_time() - cpu
        return stats

    def _send(self, message: memoryview | bytes, stats: RankStats) -> None:
        for handler in self.handlers:
            handler.handle(message)
        stats.bytes += len(message)

    def close(self) -> None:
        """Close everything without streaming (after a failure elsewhere)."""
        self._stack.__exit__(None, None, None)


def _with_batches(
    batches: Iterator[Batch], serializer: Serializer
) -> Iterator[tuple[Batch, memoryview | bytes]]:
    """Pair each message with the batch it came from (serializers yield one per batch)."""
    current: list[Batch] = []

    def remember() -> Iterator[Batch]:
        for batch in batches:
            current[:] = [batch]
            yield batch

    for message in serializer(remember()):
        yield current[0], message
