"""`lclstream`: get a stream with one command; list, inspect, cancel, read logs, join."""

from __future__ import annotations

import json
import signal
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import typer

from certified.cliutil import fail, run_typer
from nngstream.models import Delivery, Proto

from ..models import TransferState
from . import cache_cli
from .api import Client
from .errors import ClientError, ServerError

app = typer.Typer(
    name="lclstream",
    help="Ask lclstream-api for a stream and receive it.",
    no_args_is_help=True,
    add_completion=False,
)
SERVER = typer.Option("lclstream", "--server", "-s", help="service nickname (or https URL)")
CERTIFIED = typer.Option(None, "--config", help="your certified config dir")


def _say(msg: str) -> None:
    typer.echo(msg, err=True)


def _client(server: str, certified: Path | None) -> Client:
    return Client(server, certified)


def _load_config(path: Path) -> dict[str, Any]:
    from ..validate import without_handlers
    from .config import read_config

    data, had = without_handlers(read_config(path))
    if had:
        _say("lclstream: data_handlers ignored (the service sends the stream to its buffers)")
    return data


def _known_events(config: dict[str, Any]) -> int | None:
    src = config.get("event_source")
    n = src.get("number_of_events") if isinstance(src, dict) else None
    return n if isinstance(n, int) else None


@app.callback()
def _root() -> None:
    """lclstream: one authenticated request starts a whole stream."""


@app.command()
def get(
    config: Path = typer.Argument(..., help="lclstreamer configuration (YAML)"),
    server: str = SERVER,
    certified: Path | None = CERTIFIED,
    producers: int = typer.Option(2, "--producers", "-n", help="MPI ranks"),
    buffers: int = typer.Option(1, "--buffers", "-k", help="parallel buffers"),
    consumers: int | None = typer.Option(None, "--consumers", "-m", help="default: one per buffer"),
    out: Path | None = typer.Option(None, "--out", help="directory for the batches"),
    tar: Path | None = typer.Option(None, "--tar", help="write the batches into this tar file"),
    protocol: Proto = typer.Option(Proto.NNG, "--protocol"),
    delivery: Delivery = typer.Option(Delivery.AT_MOST_ONCE, "--delivery"),
    backend: str = typer.Option("default", "--backend", help="psik backend for the producers"),
    cache: Path | None = typer.Option(
        None, "--cache", help="client cache dir: replay the dataset if stored, else store it"
    ),
) -> None:
    """Start a transfer, receive every batch, print a summary; exit 0 only if the transfer
    completed and every event arrived. With --cache, a dataset stored before is written
    from the cache without contacting the server."""
    from .receive import EventCounter, account, percent, rate, receive

    if out is not None and tar is not None:
        raise ServerError("--out and --tar exclude each other")
    cfg = _load_config(config)
    known = _known_events(cfg)
    if cache is not None:
        store, key, meta, entry = cache_cli.lookup(cache, cfg, server, certified)
        if entry is not None:
            _say(cache_cli.say_replay(entry))
            typer.echo(cache_cli.summary_json(cache_cli.replay_to_files(entry, out, tar)))
            return
    client = _client(server, certified)
    opts = {"producers": producers, "buffers": buffers, "protocol": protocol.value,
            "delivery": delivery.value, "backend": backend}  # fmt: skip
    t = client.create(cfg, opts)
    _say(f"lclstream: transfer {t.id} {t.state.value}: {' '.join(t.urls)}")
    if not t.state.live:
        raise ServerError(f"transfer {t.id} {t.state.value}: {t.reason}")
    stop = threading.Event()
    canceled: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        if not canceled:
            canceled.append(signum)
            _say(f"lclstream: signal {signum}: canceling transfer {t.id}")
            try:
                client.cancel(t.id)
            except ServerError as exc:
                _say(f"lclstream: cancel failed: {exc}")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    tmp = tempfile.TemporaryDirectory() if tar is not None else None
    dest = Path(tmp.name) if tmp is not None else (out or Path(f"lclstream-{t.id}"))
    t0 = time.monotonic()
    counter = None

    def progress(cons) -> None:
        nonlocal counter
        msgs, nbytes, secs = rate(cons, t0)
        mb = nbytes / 1e6
        speed = mb / max(secs, 1e-9)
        done = ""
        if known:
            counter = counter or EventCounter([c.out_dir for c in cons])
            done = percent(counter.update(), known)
        _say(f"lclstream: {msgs} batches, {mb:.1f} MB, {speed:.1f} MB/s, {secs:.1f} s{done}")

    cons = receive(t.urls, dest, consumers or len(t.urls), protocol, delivery, stop, progress)
    seconds = time.monotonic() - t0
    # the service may be restarting: its reconciler catches up
    final = client.wait(t.id, on_retry=lambda exc: _say(f"lclstream: {exc}; retrying")) or t
    acc = account([c.out_dir for c in cons])
    ends = {c.url: c.report.end for c in cons if c.report.end is not None}
    sent = sum(e.recvd for e in ends.values())
    lost = max(sent - (acc.messages - acc.duplicates), 0) + acc.gaps
    nbytes = sum(c.report.bytes for c in cons)
    broken = [f"{c.url}: {c.error}" for c in cons if c.error]
    summary = {
        "transfer": t.id, "state": final.state.value, "reason": final.reason,
        "batches": acc.messages, "events": acc.events, "expected_events": known,
        "bytes": nbytes, "seconds": round(seconds, 3),
        "MB_per_s": round(nbytes / 1e6 / seconds, 1) if seconds > 0 else 0.0,
        "lost": lost, "duplicates": acc.duplicates, "broken_consumers": broken,
        "out": str(tar or dest),
    }  # fmt: skip
    incomplete = (
        broken or lost or acc.duplicates or (known is not None and acc.events not in (None, known))
    )
    if cache is not None and final.state is TransferState.COMPLETED and not incomplete:
        stored = cache_cli.store_files(store, key, meta, t.id, [c.out_dir for c in cons])
        summary["cached"] = str(stored.path)
        _say(f"lclstream: stored in the cache as {stored.path}")
    if tar is not None:
        with tarfile.open(tar, "w") as tf:
            tf.add(dest, arcname=".")
        tmp.cleanup()
    typer.echo(json.dumps(summary, indent=2))
    if canceled:
        raise SystemExit(130)
    if final.state is not TransferState.COMPLETED:
        fail("lclstream", f"transfer {t.id} {final.state.value}: {final.reason}")
    if incomplete:
        fail("lclstream", f"transfer {t.id} completed but the data is incomplete: "
             f"lost {lost}, duplicates {acc.duplicates}, events {acc.events}/{known}, "
             f"broken consumers {len(broken)}")  # fmt: skip


app.add_typer(cache_cli.app, name="cache")


@app.command("ls")
def ls(
    server: str = SERVER,
    certified: Path | None = CERTIFIED,
    state: TransferState | None = typer.Option(None, "--state"),
    limit: int = typer.Option(100, "--limit"),
    offset: int = typer.Option(0, "--offset"),
) -> None:
    """Your transfers, oldest first."""
    page = _client(server, certified).list(state, limit, offset)
    for t in page.transfers:
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t.created))
        typer.echo(f"{t.id}  {t.state.value:<12} {when}Z  {' '.join(t.urls)}  {t.reason}")
    _say(f"{len(page.transfers)} of {page.total}")


@app.command()
def status(
    transfer_id: str,
    server: str = SERVER,
    certified: Path | None = CERTIFIED,
    log: bool = typer.Option(False, "--log", help="the transition log and jobs, as text"),
) -> None:
    """A transfer's state, URLs, jobs, metrics and transition log (JSON; --log: text)."""
    t = _client(server, certified).get(transfer_id)
    if not log:
        typer.echo(t.model_dump_json(indent=2))
        return
    for x in t.transitions:
        when = time.strftime("%H:%M:%S", time.gmtime(x.time))
        old = x.old.value if x.old else "-"
        typer.echo(f"{when}Z  {old:>12} -> {x.new.value:<10} ({x.source}) {x.reason}")
    for role, j in t.jobs.items():
        typer.echo(f"job {role}: {j.jobid} {j.state}")


@app.command()
def cancel(transfer_id: str, server: str = SERVER, certified: Path | None = CERTIFIED) -> None:
    """Cancel a transfer (every job); a finished one is left as is."""
    t = _client(server, certified).cancel(transfer_id)
    typer.echo(f"{t.id} {t.state.value}")


@app.command()
def logs(
    transfer_id: str,
    job: str = typer.Argument(..., help="producer, buffer-0, ..."),
    stream: str = typer.Option("stderr", "--stream"),
    follow: bool = typer.Option(False, "--follow", "-f"),
    server: str = SERVER,
    certified: Path | None = CERTIFIED,
) -> None:
    """A job's log (with --follow, until the transfer ends)."""
    client = _client(server, certified)
    offset = 0
    while True:
        data, offset = client.log(transfer_id, job, stream, offset)
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        if data:
            continue
        if not follow or not client.get(transfer_id).state.live:
            return
        time.sleep(1.0)


@app.command()
def pull(
    urls: list[str] = typer.Argument(..., help="the transfer's URLs"),
    out: Path = typer.Option(Path("."), "--out"),
    protocol: Proto = typer.Option(Proto.NNG, "--protocol"),
    delivery: Delivery = typer.Option(Delivery.AT_MOST_ONCE, "--delivery"),
) -> None:
    """Join a running transfer as one more consumer per URL."""
    from .receive import receive

    cons = receive(urls, out, len(urls), protocol, delivery, threading.Event())
    for c in cons:
        typer.echo(json.dumps({"url": c.url, **c.report.as_dict(), "error": c.error}))
    if any(c.error for c in cons):
        fail("lclstream", "; ".join(c.error for c in cons if c.error))


@app.command()
def validate(config: Path = typer.Argument(...)) -> None:
    """Check a configuration with the server's models, offline."""
    from ..validate import ConfigProblems, native_config

    try:
        native_config(_load_config(config))
    except ConfigProblems as exc:
        fail("lclstream", f"{config}: {exc}", 2)
    typer.echo(f"{config}: valid")


@app.command()
def ui(
    server: str = SERVER,
    certified: Path | None = CERTIFIED,
    port: int = typer.Option(0, "--port", min=0, max=65535, help="0: any free port"),
    address: str = typer.Option("127.0.0.1", "--address", help="a loopback address only"),
) -> None:
    """Serve SERVER's web page to your browser on a loopback port, as your identity."""
    from .ui import check_loopback, serve

    try:
        check_loopback(address)
    except ServerError as exc:
        fail("lclstream", str(exc), 2)
    serve(server, certified, address, port, typer.echo)
    _say("lclstream ui: stopped")


def main() -> None:
    run_typer(app, "lclstream", (ClientError,))


if __name__ == "__main__":
    main()
