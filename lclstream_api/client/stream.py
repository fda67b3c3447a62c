"""`stream(config)`: start a transfer, yield its decoded batches, end when it completed.

The transfer is created when `stream()` is called (so `.transfer.id` and `.urls` can be
handed to other processes, which join with `pull(urls, config=...)`). Iterating receives
every buffer's batches until their end messages, then waits for the transfer's final
state: anything but `completed` raises TransferFailed with the server's reason. Closing
the iterator (or the Stream) early, or dropping it, cancels the transfer (DELETE).
With `cache=DIR`, a dataset stored before is replayed from disk without contacting the
server; a transfer that completed with every batch here becomes a cache entry.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..models import TransferDetail, TransferOptions, TransferState
from .api import Client
from .cache import Cache, Entry, dataset_key
from .config import transfer_config
from .decode import Batch, decoder_for
from .errors import ClientError, ServerError, StreamBroken, TransferFailed
from .pull import Pull, Received

log = logging.getLogger("lclstream.client")


def _cancel(client: Client, transfer_id: str) -> None:
    """DELETE the transfer (idempotent: a finished one is left as is); never raises."""
    try:
        client.cancel(transfer_id)
    except ServerError as exc:
        log.warning("lclstream: cancel of transfer %s failed: %s", transfer_id, exc)
    finally:
        client.close()


class Stream:
    """One transfer's batches (see the module's docstring). Attributes: `transfer` (the
    service's record; None when replaying), `urls`, `from_cache`, `cache_entry`,
    `received` (counts, once iterated), `final` (the transfer's final record)."""

    def __init__(
        self,
        config: Mapping[str, Any] | str | Path,
        server: str = "lclstream",
        *,
        certified: Path | None = None,
        cache: Path | str | None = None,
        wait_timeout: float = 120.0,
        dial_timeout: float = 60.0,
        **options: Any,
    ) -> None:
        self.config, _ = transfer_config(config)
        try:
            self.options = TransferOptions.model_validate(options)
        except ValidationError as exc:
            e = exc.errors()[0]
            raise ClientError(f"options.{'.'.join(map(str, e['loc']))}: {e['msg']}") from None
        self.decoder = decoder_for(self.config)
        self.wait_timeout, self.dial_timeout = wait_timeout, dial_timeout
        self.transfer: TransferDetail | None = None
        self.final: TransferDetail | None = None
        self.received: Received | None = None
        self.cache_entry: Entry | None = None
        self.from_cache = False
        self._cache: Cache | None = None
        self._iterated = False
        self._gen: weakref.ref | None = None  # the iterator, while someone holds it
        if cache is not None:
            self._cache = Cache(cache)
            self.key, self._meta = dataset_key(self.config, server, certified)
            self.cache_entry = self._cache.load(self.key)
            if self.cache_entry is not None:
                self.from_cache = True
                log.info("lclstream: replaying %s from the cache %s (no request to the "
                         "server)", self.key, self.cache_entry.path)  # fmt: skip
                return
            self._cache.check_writable()
        self.client = Client(server, certified)
        try:
            self.transfer = self.client.create(self.config, self.options.model_dump(mode="json"))
        except BaseException:
            self.client.close()
            raise
        self._cancel = weakref.finalize(self, _cancel, self.client, self.transfer.id)
        if not self.transfer.state.live:
            self._cancel()
            raise TransferFailed(
                f"transfer {self.transfer.id} {self.transfer.state.value}: "
                f"{self.transfer.reason}", self.transfer
            )  # fmt: skip

    @property
    def urls(self) -> list[str]:
        return list(self.transfer.urls) if self.transfer is not None else []

    def __iter__(self) -> Iterator[Batch]:
        """The batches (once: a transfer is received once; replay with a cache)."""
        if self._iterated:
            raise ClientError("a Stream is iterated once (use cache=DIR to replay it)")
        self._iterated = True
        gen = self._replay() if self.from_cache else self._receive()
        self._gen = weakref.ref(gen)  # not held: dropping the iterator cancels at once
        return gen

    def events(self) -> Iterator[dict[str, Any]]:
        """The stream one event at a time."""
        for batch in self:
            yield from batch.events()

    def close(self) -> None:
        """Stop: a transfer still running is canceled."""
        gen = self._gen() if self._gen is not None else None
        if gen is not None:
            gen.close()
        if self.transfer is not None:
            self._cancel()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _replay(self) -> Iterator[Batch]:
        assert self._cache is not None and self.cache_entry is not None
        yield from self._cache.replay(self.cache_entry, self.decoder)

    def _receive(self) -> Iterator[Batch]:
        assert self.transfer is not None
        tid = self.transfer.id
        writer = self._cache.writer(self.key, **self._meta) if self._cache else None
        done = False
        try:
            puller = Pull(self.urls, decoder=self.decoder, protocol=self.options.protocol,
                          delivery=self.options.delivery, dial_timeout=self.dial_timeout,
                          sink=writer.add if writer is not None else None)  # fmt: skip
            self.received = puller.received
            with puller:
                try:
                    yield from puller
                except StreamBroken as exc:
                    final = self.client.wait(tid, timeout=10)
                    if final is not None and final.state is not TransferState.COMPLETED:
                        raise TransferFailed(
                            f"transfer {tid} {final.state.value}: {final.reason} ({exc})", final
                        ) from None
                    raise
            self.final = self.client.wait(tid, timeout=self.wait_timeout)
            final = self.final
            if final is None or final.state is not TransferState.COMPLETED:
                state = final.state.value if final else "unknown"
                raise TransferFailed(f"transfer {tid} {state}: {final.reason if final else ''}",
                                     final)  # fmt: skip
            done = True
            self._cancel.detach()
            self.client.close()
            if writer is not None:
                missing = _missing(puller.received)
                if missing:
                    log.warning("lclstream: transfer %s not cached: %s", tid, missing)
                else:
                    self.cache_entry = writer.commit(tid)
                    writer = None
                    log.info("lclstream: transfer %s cached as %s", tid, self.cache_entry.path)
        finally:
            if writer is not None:
                writer.abort()
            if not done:
                self._cancel()


def _missing(received: Received) -> str:
    """Why the batches here are not the whole dataset ("" if they are): other consumers
    took some, or the buffers dropped some."""
    ends = [e for e in received.ends.values() if e is not None]
    if len(ends) != len(received.ends):
        return "a buffer ended without an end message"
    sent = sum(e.sent for e in ends)
    dropped = sum(e.dropped + e.lost_max for e in ends)
    here = received.batches + received.duplicates
    if dropped:
        return f"the buffers dropped or lost up to {dropped} batches"
    if sent > here:
        return f"{sent - here} of {sent} batches went to other consumers"
    return ""


def stream(
    config: Mapping[str, Any] | str | Path,
    server: str = "lclstream",
    *,
    certified: Path | None = None,
    cache: Path | str | None = None,
    **options: Any,
) -> Stream:
    """Start a transfer of `config` (an lclstreamer configuration: a mapping or a YAML
    file; its data_handlers are dropped) on `server` (a trusted-service nickname) and
    return its batches as an iterable `Stream` (also a context manager). `options` are
    the transfer's (producers, buffers, protocol, delivery, ...). With `cache=DIR`, a
    dataset stored before is replayed from disk without contacting the server."""
    return Stream(config, server, certified=certified, cache=cache, **options)
