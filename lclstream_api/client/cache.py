"""The client cache: the batches of completed transfers, replayed without the server.

Layout: `ROOT/KEY/manifest.json` and `ROOT/KEY/batches/NNNNNNNN.msg` (each message as
received). KEY is the sha256 of the canonical configuration, the server's identity (its
resolved URL and pinned certificate) and the software version that wrote the batches.
An entry is written in `ROOT/.tmp-KEY-*` and renamed into place only once the transfer
completed and every batch arrived, so a KEY directory is always a whole dataset. Every
batch has a checksum in the manifest (XXH3-128: it detects corrupted and truncated
files at ~10 GB/s, so checking every replay costs little beside decoding; the cache is
the user's own directory, so tampering is not what it guards against) and is checked
each time it is replayed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import xxhash
from pydantic import BaseModel, ConfigDict, ValidationError

from .decode import Batch, Decoder
from .errors import CacheError

FORMAT = 2  # 2: per-batch XXH3-128 checksums (1 had sha256)
MANIFEST = "manifest.json"
ENV = "LCLSTREAM_CACHE"


class BatchRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str  # relative to the entry
    bytes: int
    xxh3_128: str
    rank: int | None = None
    seq: int | None = None
    n_events: int


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal[2] = FORMAT  # an older entry is refused with `cache rm` advice
    key: str
    created: float
    server: str
    version: str
    transfer: str
    serializer: str
    config: dict[str, Any]
    events: int
    bytes: int
    batches: list[BatchRecord]


@dataclass
class Entry:
    key: str
    path: Path
    manifest: Manifest


def default_dir() -> Path:
    """`$LCLSTREAM_CACHE`, else `$XDG_CACHE_HOME/lclstream` (`~/.cache/lclstream`)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lclstream"


def software_version() -> str:
    """The version of the suite whose lclstreamer wrote the batches (the part that
    decides their content; the key changes with it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lclstream-suite")
    except PackageNotFoundError:  # running from a source tree without metadata
        from lclstreamer import __version__

        return __version__


def server_identity(server: str, certified: Path | None) -> str:
    """The server as the user's certified config resolves it: URL and the sha256 of the
    pinned certificate (no network)."""
    from certified import Certified

    from .api import base_url

    url, pinned = Certified(certified).resolve(base_url(server) + "/")
    pin = hashlib.sha256(pinned.encode()).hexdigest()[:16] if pinned else "unpinned"
    return f"{url.rstrip('/')}#{pin}"


def dataset_key(
    config: Mapping[str, Any], server: str, certified: Path | None
) -> tuple[str, dict[str, Any]]:
    """(cache key, manifest fields) of a native, validated configuration fetched from
    `server` as `certified` resolves it."""
    from .config import canonical

    meta = {"server": server_identity(server, certified), "version": software_version(),
            "config": dict(config), "serializer": config["data_serializer"]["type"]}  # fmt: skip
    doc = {"config": canonical(config), "server": meta["server"], "version": meta["version"]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest(), meta


class Cache:
    """One cache directory: find, write, replay, verify and remove entries."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_dir()

    # -- reading ------------------------------------------------------------------------
    def manifest(self, path: Path) -> Manifest:
        mf = path / MANIFEST
        try:
            return Manifest.model_validate_json(mf.read_bytes())
        except OSError as exc:
            raise CacheError(f"{mf}: cannot read: {exc.strerror}") from None
        except ValidationError as exc:
            what = exc.errors()[0]
            loc = ".".join(map(str, what.get("loc", ()))) or "document"
            raise CacheError(
                f"{mf}: truncated or invalid manifest ({loc}: {what['msg']}); "
                f"remove the entry: lclstream cache rm {path.name}"
            ) from None

    def load(self, key: str) -> Entry | None:
        """The entry `key`, or None if there is none (CacheError if it is unreadable)."""
        path = self.root / key
        if not path.is_dir():
            return None
        return Entry(key, path, self.manifest(path))

    def entry_keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name[0] != ".")

    def entries(self) -> Iterator[Entry | CacheError]:
        """Every entry, or the error that makes it unreadable."""
        for key in self.entry_keys():
            try:
                yield Entry(key, self.root / key, self.manifest(self.root / key))
            except CacheError as exc:
                yield exc

    def find(self, key: str) -> Path:
        """The entry directory of `key` or of the one key starting with it."""
        found = [k for k in self.entry_keys() if k.startswith(key)] if key else []
        if key in found:
            return self.root / key
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise CacheError(f"{what} cache entries match {key!r} in {self.root}")
        return self.root / found[0]

    def replay(self, entry: Entry, decoder: Decoder) -> Iterator[Batch]:
        """The entry's batches: each file is mapped into memory, its checksum checked
        over the mapping, and only then decoded from the same pages (read once, no
        copy of the file)."""
        for rec in entry.manifest.batches:
            yield decoder(read_checked(entry.path, rec))

    def verify(self, entry: Entry) -> list[str]:
        """Every problem of an entry (missing, resized or corrupted batch), one line each."""
        problems = []
        for rec in entry.manifest.batches:
            try:
                read_checked(entry.path, rec)
            except CacheError as exc:
                problems.append(str(exc))
        return problems

    # -- writing ------------------------------------------------------------------------
    def check_writable(self) -> None:
        """CacheError unless entries can be written under the root (checked before a
        transfer starts, so a bad directory costs no transfer)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as exc:
            raise CacheError(f"cache {self.root}: not writable ({exc.strerror})") from None

    def writer(self, key: str, **meta: Any) -> Writer:
        return Writer(self, key, meta)

    def remove(self, key: str) -> Path:
        path = self.find(key)
        try:
            shutil.rmtree(path)
        except OSError as exc:
            raise CacheError(f"{path}: cannot remove: {exc.strerror}") from None
        return path


class Writer:
    """Collects one transfer's batches in a temporary directory; `commit` makes it the
    entry (atomic rename), `abort` removes it. `add` may be called from several threads."""

    def __init__(self, cache: Cache, key: str, meta: dict[str, Any]) -> None:
        cache.check_writable()
        self.cache, self.key, self.meta = cache, key, meta
        self.tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:16]}-", dir=cache.root))
        (self.tmp / "batches").mkdir()
        self.records: list[BatchRecord] = []
        self._lock = threading.Lock()
        self._n = 0

    def add(self, message: memoryview | bytes, batch: Batch) -> None:
        with self._lock:
            self._n += 1
            name = f"batches/{self._n:08d}.msg"
        digest = xxhash.xxh3_128_hexdigest(message)
        with open(self.tmp / name, "wb") as f:
            f.write(message)
        rec = BatchRecord(file=name, bytes=len(message), xxh3_128=digest, rank=batch.rank,
                          seq=batch.seq, n_events=batch.n_events)  # fmt: skip
        with self._lock:
            self.records.append(rec)

    def commit(self, transfer: str) -> Entry:
        """Write the manifest and rename the directory into place (if another process
        stored the same dataset first, its entry is kept and this one dropped)."""
        records = sorted(self.records, key=lambda r: (r.rank or 0, r.seq or 0, r.file))
        manifest = Manifest(key=self.key, created=time.time(), transfer=transfer,
                            events=sum(r.n_events for r in records),
                            bytes=sum(r.bytes for r in records), batches=records,
                            **self.meta)  # fmt: skip
        (self.tmp / MANIFEST).write_text(manifest.model_dump_json(indent=1))
        target = self.cache.root / self.key
        try:
            os.rename(self.tmp, target)
        except OSError:
            if not target.is_dir():
                self.abort()
                raise CacheError(f"cache {target}: cannot store the entry") from None
            self.abort()  # stored meanwhile by another process: same dataset
        return Entry(self.key, target, self.cache.manifest(target))

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            shutil.rmtree(self.tmp)


def read_checked(root: Path, rec: BatchRecord) -> mmap.mmap | bytes:
    """The batch file mapped into memory (read-only; unmapped once no one holds it),
    after checking its size and checksum over the mapping (CacheError naming the file).
    No copy: the checksum and the decoder read the page cache's pages in place."""
    path = root / rec.file
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if size != rec.bytes:
                raise CacheError(f"{path}: {size} bytes, the manifest says {rec.bytes}")
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as exc:
        raise CacheError(f"{path}: cannot read: {exc.strerror}") from None
    if xxhash.xxh3_128_hexdigest(data) != rec.xxh3_128:
        raise CacheError(f"{path}: corrupted (checksum differs from the manifest)")
    return data


def entry_summary(entry: Entry) -> Mapping[str, Any]:
    m = entry.manifest
    return {"key": entry.key, "created": m.created, "server": m.server, "transfer": m.transfer,
            "batches": len(m.batches), "events": m.events, "bytes": m.bytes,
            "source": m.config.get("source_identifier", "")}  # fmt: skip
