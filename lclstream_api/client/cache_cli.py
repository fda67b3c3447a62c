"""`lclstream cache ls|rm|verify`, and what `lclstream get --cache DIR` does with a cache."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import typer

from certified.cliutil import fail

from .cache import Cache, Entry, Writer, dataset_key, entry_summary, read_checked
from .config import transfer_config
from .decode import decoder_for
from .errors import CacheError

app = typer.Typer(help="The client cache (datasets of completed transfers).",
                  no_args_is_help=True)  # fmt: skip
DIR = typer.Option(
    None, "--cache", help="cache dir (default: $LCLSTREAM_CACHE, ~/.cache/lclstream)"
)


@app.command("ls")
def ls(cache: Path | None = DIR) -> None:
    """Every entry: key, created, events, batches, MB, source, server."""
    store = Cache(cache)
    n = 0
    for e in store.entries():
        n += 1
        if isinstance(e, CacheError):
            typer.echo(f"unreadable: {e}")
            continue
        s = entry_summary(e)
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s["created"]))
        typer.echo(f"{s['key']}  {when}Z  {s['events']} events  {s['batches']} batches  "
                   f"{s['bytes'] / 1e6:.1f} MB  {s['source']}  {s['server']}")  # fmt: skip
    typer.echo(f"{n} entries in {store.root}", err=True)


@app.command("rm")
def rm(keys: list[str] = typer.Argument(..., help="keys (or unique prefixes)"),
       cache: Path | None = DIR) -> None:  # fmt: skip
    """Remove entries."""
    store = Cache(cache)
    for key in keys:
        typer.echo(f"removed {store.remove(key)}")


@app.command("verify")
def verify(keys: list[str] = typer.Argument(None, help="keys or prefixes (default: all)"),
           cache: Path | None = DIR) -> None:  # fmt: skip
    """Check every batch of the entries against its sha256; exit 1 naming each problem."""
    store = Cache(cache)
    problems: list[str] = []
    paths = [store.find(k) for k in keys] if keys else [store.root / k for k in store.entry_keys()]
    for path in paths:
        try:
            entry = Entry(path.name, path, store.manifest(path))
        except CacheError as exc:
            problems.append(str(exc))
            typer.echo(f"{path.name}: {exc}")
            continue
        found = store.verify(entry)
        problems += found
        for p in found:
            typer.echo(f"{path.name}: {p}")
        if not found:
            typer.echo(f"{path.name}: ok ({len(entry.manifest.batches)} batches)")
    if problems:
        fail("lclstream", f"{len(problems)} problems in {len(paths)} cache entries")
    typer.echo(f"{len(paths)} entries verified", err=True)


# -- lclstream get --cache ----------------------------------------------------------------
def lookup(cache: Path, cfg: dict[str, Any], server: str, certified: Path | None):
    """(cache, key, manifest fields, the entry or None); CacheError if the directory
    cannot take a new entry."""
    native, _ = transfer_config(cfg)
    key, meta = dataset_key(native, server, certified)
    store = Cache(cache)
    entry = store.load(key)
    if entry is None:
        store.check_writable()
    return store, key, meta, entry


def replay_to_files(entry: Entry, dest: Path | None, tar: Path | None) -> dict[str, Any]:
    """Write the entry's batches (each checked) to DEST/cache/ or into TAR; the summary."""
    t0 = time.monotonic()
    m = entry.manifest
    dest = dest or Path(f"lclstream-{m.transfer}")
    with contextlib.ExitStack() as stack:
        tf = stack.enter_context(tarfile.open(tar, "w")) if tar is not None else None
        if tf is None:
            (dest / "cache").mkdir(parents=True, exist_ok=True)
        for i, rec in enumerate(m.batches, 1):
            data = read_checked(entry.path, rec)
            name = f"cache/{i:08d}.msg"
            if tf is not None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                (dest / name).write_bytes(data)
    seconds = time.monotonic() - t0
    return {
        "transfer": m.transfer, "state": "completed", "reason": "",
        "from_cache": str(entry.path), "batches": len(m.batches), "events": m.events,
        "bytes": m.bytes, "seconds": round(seconds, 3),
        "MB_per_s": round(m.bytes / 1e6 / seconds, 1) if seconds > 0 else 0.0,
        "lost": 0, "duplicates": 0, "broken_consumers": [], "out": str(tar or dest),
    }  # fmt: skip


def store_files(
    store: Cache, key: str, meta: dict[str, Any], transfer: str, dirs: list[Path]
) -> Entry:
    """Store a completed transfer's received batch files as the entry `key` (one per
    (rank, seq): a duplicate is stored once)."""
    decoder = decoder_for(meta["config"])
    writer: Writer = store.writer(key, **meta)
    seen: set[tuple[int, int]] = set()
    try:
        for d in dirs:
            for path in sorted(d.glob("*.msg")):
                data = path.read_bytes()
                batch = decoder(memoryview(data))
                if batch.key is not None:
                    if batch.key in seen:
                        continue
                    seen.add(batch.key)
                writer.add(data, batch)
        return writer.commit(transfer)
    except BaseException:
        writer.abort()
        raise


def say_replay(entry: Entry) -> str:
    return (f"lclstream: dataset {entry.key[:16]} replayed from the cache {entry.path} "
            "(no request to the server)")  # fmt: skip


def summary_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2)
