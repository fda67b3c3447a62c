"""PyTorch: `StreamDataset`, an IterableDataset over a transfer or over a cached dataset.

torch is imported by this module only (`import lclstream_api.client` never imports it).

Two modes:

- **live** (no `cache`): the constructor starts the transfer, in the process that builds
  the dataset (before any DataLoader worker exists). Every process or DataLoader worker
  that iterates the dataset joins the transfer's buffers as one more consumer, so each
  batch goes to exactly one of them; each ends at its buffers' end messages and then
  checks the transfer's final state (anything but `completed` raises TransferFailed).
  One pass: a live transfer is received once. `close()`, or dropping the dataset, cancels
  a transfer still running. Other training processes join with `StreamDataset.join`.
- **epoch** (`cache=DIR`): the constructor makes sure the dataset is in the client cache
  (when it is not, it receives the whole transfer into the cache there and then: the
  first epoch starts once the transfer completed); every epoch, the first included,
  replays the entry from disk without contacting the server, its batches sharded over
  ranks and workers (batch i of the manifest's (rank, seq) order goes to consumer
  i mod (world_size * num_workers)).

Items are per-event samples (`per_event=True`): dict field -> numpy array (the event's
row, 0-d for a scalar field), views into the decoded batch (no copy), which DataLoader's
default collate stacks into tensors; or whole `Batch`es (`per_event=False`, use
`DataLoader(batch_size=None)`). `transform` is applied to each item in the consumer
process.

NNG aborts a forked child whose parent opened NNG sockets: a live dataset's DataLoader
workers are forked safely from a process that only built the dataset (HTTPS calls only);
otherwise give the DataLoader `multiprocessing_context="forkserver"` (or "spawn").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch.utils.data import IterableDataset, get_worker_info

from nngstream.models import Delivery, Proto

from ..models import TransferDetail, TransferState
from .api import Client
from .cache import Cache, Entry, dataset_key
from .config import transfer_config
from .decode import Batch, decoder_for
from .errors import CacheError, ClientError, StreamBroken, TransferFailed
from .pull import Pull
from .stream import Stream

__all__ = ["Source", "StreamDataset"]

log = logging.getLogger("lclstream.client")

Transform = Callable[[Any], Any]


class Source(BaseModel):
    """What another process needs to join a running transfer (JSON-able, picklable):
    `transfer` (its id on `server`; None when only the URLs are known), the buffers'
    `urls`, the lclstreamer `config` (names the fields and the format), and how the
    buffers deliver."""

    model_config = ConfigDict(extra="forbid")

    transfer: str | None = None
    server: str = "lclstream"
    urls: list[str] = Field(min_length=1)
    config: dict[str, Any] | None = None
    protocol: Proto = Proto.NNG
    delivery: Delivery = Delivery.AT_MOST_ONCE


class StreamDataset(IterableDataset):
    """A transfer of `config` from `server` as a torch IterableDataset (see the module's
    docstring). `options` are the transfer's (producers, buffers, protocol, delivery...).
    With `cache=DIR`, epoch mode; `fill=False` then raises CacheError instead of starting
    a transfer when the dataset is not in the cache. `rank`/`world_size` shard the cache
    replay (default: torch.distributed's, when it is initialized; else 0 of 1)."""

    def __init__(
        self,
        config: Mapping[str, Any] | str | Path,
        server: str = "lclstream",
        *,
        certified: Path | str | None = None,
        cache: Path | str | None = None,
        fill: bool = True,
        per_event: bool = True,
        transform: Transform | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        dial_timeout: float = 60.0,
        wait_timeout: float = 120.0,
        **options: Any,
    ) -> None:
        super().__init__()
        self.certified = Path(certified) if certified is not None else None
        self.per_event, self.transform = per_event, transform
        self.dial_timeout, self.wait_timeout = dial_timeout, wait_timeout
        self.source: Source | None = None
        self.cache_entry: Entry | None = None
        self.from_cache = False
        self._stream: Stream | None = None  # the transfer this process started (owner)
        self._received_in: int | None = None  # pid that received the live transfer
        if cache is None:
            self._stream = Stream(config, server, certified=self.certified,
                                  dial_timeout=dial_timeout, **options)  # fmt: skip
            s = self._stream
            assert s.transfer is not None
            self.source = Source(transfer=s.transfer.id, server=server, urls=s.urls,
                                 config=s.config, protocol=s.options.protocol,
                                 delivery=s.options.delivery)  # fmt: skip
            return
        self.rank, self.world_size = _rank_world(rank, world_size)
        self._cache_root = Path(cache)
        native, _ = transfer_config(config)
        self.config = native
        key, _meta = dataset_key(native, server, self.certified)
        self.cache_entry = Cache(cache).load(key)
        if self.cache_entry is not None:
            self.from_cache = True
            log.info("lclstream: StreamDataset replays %s from the cache %s (no request to "
                     "the server)", key, self.cache_entry.path)  # fmt: skip
            return
        if not fill:
            raise CacheError(f"cache {cache}: no entry {key} for this dataset (fill=False)")
        fetch = Stream(native, server, certified=self.certified, cache=cache,
                       dial_timeout=dial_timeout, wait_timeout=wait_timeout, **options)  # fmt: skip
        with fetch as s:
            for _ in s:  # the whole transfer, stored batch by batch as it arrives
                pass
        if s.cache_entry is None:
            raise CacheError(
                f"cache {cache}: transfer {s.transfer.id if s.transfer else '?'} completed "
                "but not every batch arrived here (another consumer joined, or the buffer "
                "dropped some), so it is not cached"
            )
        self.cache_entry = s.cache_entry

    # -- joining ----------------------------------------------------------------------
    @classmethod
    def join(
        cls,
        source: Source | Mapping[str, Any] | Sequence[str],
        *,
        config: Mapping[str, Any] | str | Path | None = None,
        certified: Path | str | None = None,
        per_event: bool = True,
        transform: Transform | None = None,
        dial_timeout: float = 60.0,
        wait_timeout: float = 120.0,
    ) -> StreamDataset:
        """A consumer of a running transfer another process started: `source` is that
        dataset's `.source` (or its JSON), or the bare buffer URLs (then `config` names
        the format; the stream ends at the end messages and no final state is checked)."""
        if isinstance(source, Source):
            src = source
        elif isinstance(source, Mapping):
            try:
                src = Source.model_validate(source)
            except ValidationError as exc:
                e = exc.errors()[0]
                where = ".".join(map(str, e["loc"]))
                raise ClientError(f"StreamDataset.join: source.{where}: {e['msg']}") from None
        else:
            native = transfer_config(config)[0] if config is not None else None
            urls = [source] if isinstance(source, str) else list(source)
            src = Source(urls=urls, config=native)
        self = cls.__new__(cls)
        IterableDataset.__init__(self)
        self.certified = Path(certified) if certified is not None else None
        self.per_event, self.transform = per_event, transform
        self.dial_timeout, self.wait_timeout = dial_timeout, wait_timeout
        self.source, self.cache_entry, self.from_cache = src, None, False
        self._stream, self._received_in = None, None
        return self

    @classmethod
    def distributed(
        cls,
        config: Mapping[str, Any] | str | Path,
        server: str = "lclstream",
        *,
        src: int = 0,
        **kw: Any,
    ) -> StreamDataset:
        """Under torch.distributed: rank `src` builds the dataset (starts the transfer, or
        fills the cache) and the other ranks join it (live) or replay the same cache entry
        (epoch mode: the cache directory must be shared). Collective: every rank calls it."""
        box: list[Any] = [None]
        if dist.get_rank() == src:
            try:
                ds = cls(config, server, **kw)
            except Exception as exc:  # the other ranks must not wait forever: tell them
                box = [{"error": f"{type(exc).__name__}: {exc}"}]
                dist.broadcast_object_list(box, src=src)
                raise
            box = [ds.source.model_dump(mode="json") if ds.source is not None else {}]
            dist.broadcast_object_list(box, src=src)
            return ds
        dist.broadcast_object_list(box, src=src)
        got = box[0]
        if "error" in got:
            raise ClientError(f"rank {src} could not start the dataset: {got['error']}")
        if not got:  # epoch mode: rank src filled the cache
            return cls(config, server, **{**kw, "fill": False})
        keep = ("certified", "per_event", "transform", "dial_timeout", "wait_timeout")
        return cls.join(Source.model_validate(got), **{k: v for k, v in kw.items() if k in keep})

    # -- the transfer -----------------------------------------------------------------
    @property
    def transfer(self) -> TransferDetail | None:
        """The service's record of the transfer this process started (else None)."""
        return self._stream.transfer if self._stream is not None else None

    def close(self) -> None:
        """Cancel the transfer this process started if it is still running (dropping the
        dataset does the same)."""
        if self._stream is not None:
            self._stream.close()

    def __enter__(self) -> StreamDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        """What a DataLoader worker started with `spawn` gets: never the ownership of the
        transfer (only this process cancels it)."""
        state = self.__dict__.copy()
        state["_stream"] = None
        return state

    # -- consuming --------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        batches = self._replay() if self.cache_entry is not None else self._live()
        for batch in batches:
            if self.per_event:
                for i in range(batch.n_events):  # 0-d arrays, not numpy scalars: collate
                    event = {name: arr[i, ...] for name, arr in batch.items()}  # keeps uint64
                    yield self.transform(event) if self.transform else event
            else:
                yield self.transform(batch) if self.transform else batch

    def _live(self) -> Iterator[Batch]:
        if self.source is None:
            raise ClientError("StreamDataset: no transfer and no cache entry")
        if self._received_in == os.getpid():
            raise ClientError(
                "a live StreamDataset is received once per process (the transfer is "
                "streamed once); use cache=DIR to make epochs"
            )
        self._received_in = os.getpid()
        return receive(self.source, self.certified, self.dial_timeout, self.wait_timeout)

    def _replay(self) -> Iterator[Batch]:
        assert self.cache_entry is not None
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        total = self.world_size * workers
        me = self.rank * workers + worker
        entry = self.cache_entry
        mine = entry.manifest.batches[me::total]
        shard = Entry(entry.key, entry.path, entry.manifest.model_copy(update={"batches": mine}))
        return Cache(self._cache_root).replay(shard, decoder_for(self.config))


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world_size): the ones given, else torch.distributed's, else (0, 1)."""
    up = dist.is_available() and dist.is_initialized()
    r = rank if rank is not None else (dist.get_rank() if up else 0)
    w = world_size if world_size is not None else (dist.get_world_size() if up else 1)
    if not 0 <= r < w:
        raise ClientError(f"StreamDataset: rank {r} is not in 0..{w - 1} (world_size {w})")
    return r, w


def receive(
    src: Source, certified: Path | None, dial_timeout: float = 60.0, wait_timeout: float = 120.0
) -> Iterator[Batch]:
    """One consumer's batches of a running transfer: pull its buffers to their end
    messages, then (when the transfer id is known) require its final state `completed`.
    A consumer that starts after the transfer completed gets nothing (the others took
    every batch) and says so; a failed transfer raises TransferFailed with the reason."""
    client = Client(src.server, certified) if src.transfer is not None else None
    try:
        if client is not None:
            now = client.get(src.transfer)
            if not now.state.live:
                _require_completed(now, src.transfer)
                log.warning("lclstream: transfer %s already completed when this consumer "
                            "(pid %d) started: nothing left for it", src.transfer,
                            os.getpid())  # fmt: skip
                return
        puller = Pull(src.urls, decoder=decoder_for(src.config), protocol=src.protocol,
                      delivery=src.delivery, dial_timeout=dial_timeout)  # fmt: skip
        with puller:
            try:
                yield from puller
            except ClientError as exc:
                if client is None:
                    raise
                final = client.wait(src.transfer, timeout=10)
                if final is None or final.state.live:
                    raise
                _require_completed(final, src.transfer, exc)
                if isinstance(exc, StreamBroken) or puller.received.batches:
                    raise
                log.warning("lclstream: transfer %s completed before this consumer (pid "
                            "%d) reached its buffers: nothing left for it (%s)", src.transfer,
                            os.getpid(), exc)  # fmt: skip
                return
        if client is not None:
            final = client.wait(src.transfer, timeout=wait_timeout)
            if final is None:
                raise TransferFailed(f"transfer {src.transfer}: no final state")
            if final.state.live:
                raise TransferFailed(
                    f"transfer {src.transfer} still {final.state.value} {wait_timeout:g}s "
                    "after its buffers ended", final
                )  # fmt: skip
            _require_completed(final, src.transfer)
    finally:
        if client is not None:
            client.close()


def _require_completed(
    final: TransferDetail, tid: str | None, cause: BaseException | None = None
) -> None:
    if final.state is not TransferState.COMPLETED:
        extra = f" ({cause})" if cause is not None else ""
        raise TransferFailed(
            f"transfer {tid} {final.state.value}: {final.reason}{extra}", final
        ) from None
