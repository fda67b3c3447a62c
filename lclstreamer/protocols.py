"""The layers of the engine as protocols, and the values that flow between them.

An EventSource yields RawEvents (this rank's share of the run); each
DataSource turns a RawEvent into one named value; the engine collects them
into an Event; a ProcessingPipeline turns Events into Batches; a Serializer
turns Batches into messages (bytes-like); every DataHandler consumes every
message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class RunInfo:
    """What identifies the run the events come from."""

    experiment: str
    run: int


@dataclass(frozen=True)
class StreamContext:
    """Where this process sits in the job: its rank and what it streams."""

    rank: int
    size: int
    source_identifier: str
    max_events: int | None = None


class RawEvent(Protocol):
    """One event as an event source presents it; every accessor returns None when absent."""

    index: int

    def detector(self, name: str, kind: str) -> np.ndarray | None: ...

    def scalar(self, name: str) -> Any | None: ...

    def timestamp(self) -> int | None:
        """uint64 seconds << 32 | nanoseconds."""
        ...

    def photon_energy_ev(self) -> float | None: ...

    def event_codes(self) -> np.ndarray | None:
        """The event codes that fired (integers in 0..255)."""
        ...


@dataclass
class Event:
    """The named values extracted from one raw event."""

    index: int
    data: dict[str, Any]


@dataclass
class Batch:
    """Events stacked per field: every array has shape (n_events, ...).

    Arrays may be views of buffers the pipeline reuses: a batch is valid until
    the next one is requested.
    """

    seq: int
    first_event: int
    n_events: int
    data: dict[str, np.ndarray] = field(default_factory=dict)


@runtime_checkable
class EventSource(Protocol):
    """Produces this rank's events of a run."""

    def run_info(self) -> RunInfo: ...

    def events(self) -> Iterator[RawEvent]: ...

    def close(self) -> None: ...


class DataSource(Protocol):
    """Extracts one value from a raw event; None means the event lacks it."""

    def __call__(self, event: RawEvent) -> Any | None: ...


class ProcessingPipeline(Protocol):
    """Transforms the stream of events into a stream of batches."""

    def __call__(self, events: Iterator[Event]) -> Iterator[Batch]: ...


class Serializer(Protocol):
    """Turns batches into messages; a message is valid until the next one is requested."""

    suffix: str

    def __call__(self, batches: Iterator[Batch]) -> Iterator[memoryview | bytes]: ...


class DataHandler(AbstractContextManager, Protocol):
    """Consumes messages; leaving the context flushes and delivers everything."""

    def handle(self, message: memoryview | bytes) -> None: ...
