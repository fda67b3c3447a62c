"""`pull(urls)`: decoded batches from K buffers, in memory, until every buffer's end.

One thread per URL receives (NNG Pull0, ZMQ PULL, or acked NNG Pair1), decodes each
message as it arrives (the message is freed right after: the batch owns its arrays),
drops duplicates by (rank, seq) and hands batches to the caller's iterator through a
small bounded queue (back-pressure reaches the buffer). A buffer that goes away
without its end message is a broken stream: `StreamBroken` says what arrived.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from nngstream.errors import NngstreamError
from nngstream.errors import StreamBroken as BufferGone
from nngstream.models import Delivery, EndOfStream, Proto, check_url
from nngstream.nngio import NngInlet
from nngstream.tools import inlet_messages
from nngstream.zmqio import ZmqInlet

from .decode import Batch, Decoder, decoder_for
from .errors import ClientError, StreamBroken

Sink = Callable[[memoryview, Batch], None]
"""Called (from a receiving thread) with each new batch's message before it is freed."""


@dataclass
class Received:
    """What arrived so far, over every URL."""

    batches: int = 0
    events: int = 0
    bytes: int = 0
    duplicates: int = 0  # (rank, seq) seen before: dropped
    ends: dict[str, EndOfStream | None] = field(default_factory=dict)  # URL -> end message

    def as_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "events": self.events, "bytes": self.bytes,
                "duplicates": self.duplicates, "ended": sorted(self.ends)}  # fmt: skip


@dataclass
class _Done:
    url: str
    end: EndOfStream | None = None
    error: BaseException | None = None


class Pull:
    """Iterator of `Batch` over every URL until each buffer's end message; a context
    manager (closing early stops every receiver and leaves the buffers to the others).
    `received` counts what arrived (and duplicates dropped)."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        config: Mapping[str, Any] | None = None,
        decoder: Decoder | None = None,
        protocol: Proto | str = Proto.NNG,
        delivery: Delivery | str = Delivery.AT_MOST_ONCE,
        dial_timeout: float = 60.0,
        prefetch: int = 4,
        sink: Sink | None = None,
    ) -> None:
        if not urls:
            raise ClientError("pull: no URLs (a transfer's `urls`)")
        self.urls = list(urls)
        self.protocol, self.delivery = Proto(protocol), Delivery(delivery)
        if self.delivery is Delivery.ACKED and self.protocol is not Proto.NNG:
            raise ClientError("pull: acked delivery is NNG only")
        for url in self.urls:
            try:
                check_url(url, self.protocol)
            except (NngstreamError, ValueError) as exc:
                raise ClientError(f"pull: {exc}") from None
        self.decoder = decoder or decoder_for(config)
        self.dial_timeout = dial_timeout
        self.sink = sink
        self.received = Received()
        self._seen: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._queue: queue.Queue[Batch | _Done] = queue.Queue(maxsize=max(prefetch, 1))
        self._closers: list[Callable[[], None]] = []
        self._pending = len(self.urls)
        self._threads = [
            threading.Thread(target=self._run, args=(url,), name=f"pull {url}", daemon=True)
            for url in self.urls
        ]
        for t in self._threads:
            t.start()

    # -- the caller's side ------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        while self._pending:
            item = self._queue.get()
            if isinstance(item, Batch):
                return item
            self._pending -= 1
            if item.error is not None:
                self.close()
                if isinstance(item.error, ClientError):
                    raise item.error
                raise ClientError(f"{item.url}: {item.error}") from item.error
            self.received.ends[item.url] = item.end
        self.close()
        raise StopIteration

    def events(self) -> Iterator[dict[str, Any]]:
        """The stream one event at a time."""
        for batch in self:
            yield from batch.events()

    def close(self) -> None:
        """Stop receiving (what is in flight is dropped) and wait for the receivers."""
        self._stop.set()
        with self._lock:
            closers, self._closers = self._closers, []
        for close in closers:  # wakes an acked receiver blocked in recv
            with contextlib.suppress(Exception):
                close()
        for t in self._threads:
            while t.is_alive():
                with contextlib.suppress(queue.Empty):
                    while True:
                        self._queue.get_nowait()  # unblock a receiver waiting to put
                t.join(0.05)

    def __enter__(self) -> Pull:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- receiving threads ----------------------------------------------------------------
    def _put(self, item: Batch | _Done) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _take(self, message: memoryview) -> None:
        """Decode one message; keep it unless its (rank, seq) came before."""
        batch = self.decoder(message)
        key = batch.key
        with self._lock:
            if key is not None:
                if key in self._seen:
                    self.received.duplicates += 1
                    return
                self._seen.add(key)
            self.received.batches += 1
            self.received.events += batch.n_events
            self.received.bytes += len(message)
        if self.sink is not None:
            self.sink(message, batch)
        self._put(batch)

    def _run(self, url: str) -> None:
        try:
            acked = self.delivery is Delivery.ACKED
            self._put(_Done(url, self._run_acked(url) if acked else self._run_plain(url)))
        except BufferGone as exc:
            self._put(_Done(url, error=StreamBroken(str(exc), self.received.as_dict())))
        except BaseException as exc:  # reported by the caller's iterator, never lost
            if not self._stop.is_set():
                self._put(_Done(url, error=exc))

    def _run_plain(self, url: str) -> EndOfStream | None:
        ctx = zmq.Context() if self.protocol is Proto.ZMQ else None
        kw: dict[str, Any] = {"dial": True, "dial_timeout": self.dial_timeout,
                              "on_change": lambda: None}  # fmt: skip
        inlet: NngInlet | ZmqInlet = ZmqInlet(ctx, url, **kw) if ctx else NngInlet(url, **kw)

        def take(item: object) -> None:
            try:
                self._take(inlet.body(item))
            finally:
                inlet.discard(item)

        try:
            for got in inlet_messages(inlet, url, lambda: self.received.batches, self._stop):
                if got is not None:
                    take(got[0])
            return None if self._stop.is_set() else inlet.end
        finally:
            inlet.close()
            if ctx is not None:
                ctx.term()

    def _run_acked(self, url: str) -> EndOfStream | None:
        from nngstream.acked import AckedConsumer

        consumer = AckedConsumer(url, dial_timeout=self.dial_timeout)
        with self._lock:
            self._closers.append(consumer.sock.close)
        try:
            for _producer, _seq, payload in consumer.messages(lambda: self.received.batches):
                if self._stop.is_set():
                    return None
                self._take(payload)  # acknowledged when the next one is asked for
            return consumer.end
        finally:
            with contextlib.suppress(Exception):
                consumer.close()


def pull(
    urls: Sequence[str],
    *,
    config: Mapping[str, Any] | None = None,
    protocol: Proto | str = Proto.NNG,
    delivery: Delivery | str = Delivery.AT_MOST_ONCE,
    dial_timeout: float = 60.0,
    prefetch: int = 4,
) -> Pull:
    """Join a transfer's buffers (`urls`, its OUT addresses) as one consumer each and
    yield decoded batches until every buffer's end message. `config` (the lclstreamer
    configuration) names the fields and the format; without it, HDF5 batches with
    datasets under their paths. Several processes may each `pull` the same URLs: every
    batch goes to exactly one of them."""
    return Pull(urls, config=config, protocol=protocol, delivery=delivery,
                dial_timeout=dial_timeout, prefetch=prefetch)  # fmt: skip
