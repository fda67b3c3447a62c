"""The layers of the engine as protocols, and the values that flow between them.

An EventSource yields RawEvents (this rank's share of the run); each
DataSource turns a RawEvent into one named value; the engine collects them
into an Event; a ProcessingPipeline turns Events into Batches; a Serializer
turns Batches into messages (bytes-like); every DataHandler consumes every
message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class RunInfo:
    """What identifies the run the events come from."""

    experiment: str
    run: int
    timestamp: int | None = None
    """Start of the run (uint64 seconds << 32 | nanoseconds), when the source knows it."""


@dataclass(frozen=True)
class StreamContext:
    """Where this process sits in the job: its rank and what it streams."""

    rank: int
    size: int
    source_identifier: str
    max_events: int | None = None
    stop: Callable[[], bool] = field(default=lambda: False, compare=False)
    """True once the job was asked to stop (handlers give up waiting for peers)."""
    comm: Any = field(default=None, compare=False)
    """The job's process group (lclstreamer.mpi.Comm) for run-wide coordination; None
    means a job of one process."""

    def allgather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (a collective: every rank must call it, in the same order)."""
        return [obj] if self.comm is None else self.comm.allgather(obj)


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


class Column(Protocol):
    """One field of a batch: every event's value, all of one shape and dtype."""

    shape: tuple[int, ...]  # of one event's value
    dtype: np.dtype  # object for strings

    @property
    def rows(self) -> Sequence[Any]:
        """The events' values, not copied (arrays, numpy scalars or strings)."""
        ...

    def stack(self) -> np.ndarray:
        """The values as one (n_events, ...) array (into a reused buffer, on first request)."""
        ...


@dataclass
class Batch:
    """A run of consecutive events of this rank, by field.

    A batch and its columns are valid until the next batch is requested: the
    pipeline reuses its buffers.
    """

    seq: int
    first_event: int
    n_events: int
    columns: dict[str, Column] = field(default_factory=dict)
    indices: list[int] = field(default_factory=list)
    """The run index of each event (a rank's events are not consecutive)."""

    def array(self, name: str) -> np.ndarray:
        """Field `name` as an (n_events, ...) array."""
        return self.columns[name].stack()


@runtime_checkable
class EventSource(Protocol):
    """Produces this rank's events of a run."""

    def run_info(self) -> RunInfo: ...

    def events(self) -> Iterator[RawEvent]: ...

    def close(self) -> None: ...


class DataSource(Protocol):
    """Extracts one value from a raw event; None means the event lacks it.

    Values are kept by reference until their batch is serialized, so a source
    must not overwrite an array it has handed out (return a new one, or a
    read-only one).
    """

    def __call__(self, event: RawEvent) -> Any | None: ...


class ProcessingPipeline(Protocol):
    """Transforms the stream of events into a stream of batches."""

    def __call__(self, events: Iterator[Event]) -> Iterator[Batch]: ...


class Serializer(Protocol):
    """Turns batches into messages; a message is valid until the next one is requested."""

    suffix: str

    def __call__(self, batches: Iterator[Batch]) -> Iterator[memoryview | bytes]: ...


@runtime_checkable
class RunBracket(Protocol):
    """A serializer whose run starts and ends with one message each (e.g. Simplon).

    Rank 0 takes its first batch (None if it has none) and sends `opening(first)`; then
    every rank `join`s rank 0's `series()` (e.g. the series date) before streaming. After
    every rank has streamed and closed its handlers, rank 0 sends `closing(events)` with
    the number of events of the whole run.
    """

    def opening(self, first: Batch | None) -> bytes: ...

    def series(self) -> Any: ...

    def join(self, series: Any) -> None: ...

    def closing(self, events: int) -> bytes: ...


@runtime_checkable
class Counting(Protocol):
    """A layer that counts what it did (drops, bytes per stage) for the run summary."""

    def counters(self) -> dict[str, int]: ...


class DataHandler(AbstractContextManager, Protocol):
    """Consumes messages; leaving the context flushes and delivers everything."""

    def handle(self, message: memoryview | bytes) -> None: ...
