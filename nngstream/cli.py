"""`nngstream IN_URL OUT_URL [options]` runs a buffer; `nngstream push|pull` move files."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

import typer
from pydantic import ValidationError

from certified.cliutil import fail, run_typer
from certified.errors import CertifiedError
from certified.logs import configure_json_logging
from certified.webhooks import Destinations, nickname_url

from .engine import Buffer
from .errors import NngstreamError
from .fifo import WhenFull
from .lifecycle import State
from .malloc import reuse_freed_memory
from .models import BufferSettings, Delivery, Proto
from .sizes import format_size

EXIT_FAILED = 1  # the buffer ended in state failed, or an address could not be used
EXIT_USAGE = 2  # bad option values (as click reports usage errors)

_OPTION_NAMES = {
    "in_url": "IN_URL",
    "out_url": "OUT_URL",
    "max_bytes": "--max-bytes",
    "max_messages": "--max-messages",
    "metrics_interval": "--metrics-interval",
    "idle_timeout": "--idle-timeout",
    "producers": "--producers",
    "callback": "--callback",
    "cb_secret": "--cb-secret-file",
    "certified_config": "--certified-config",
    "linger": "--linger",
    "dial_timeout": "--dial-timeout",
    "end_timeout": "--end-timeout",
    "spill": "--spill",
    "spill_max_bytes": "--spill-max-bytes",
    "route_by": "--route-by",
    "in_delivery": "--in-delivery",
    "ready_file": "--ready-file",
}

SECRET_ENV = "NNGSTREAM_CB_SECRET"


def _callback_secret(
    callback: str | None, secret_file: Path | None, allow: list[str], certified: Path | None
) -> str | None:
    """The callback's HMAC key (from the file or the environment), once the operator's
    allow-list admits the URL; usage errors exit 2."""
    if secret_file is not None:
        try:
            secret: str | None = secret_file.read_text().strip()
        except OSError as exc:
            raise _fail(f"--cb-secret-file: {secret_file}: {exc.strerror}", EXIT_USAGE) from None
        if not secret:
            raise _fail(f"--cb-secret-file: {secret_file} is empty", EXIT_USAGE)
    else:
        secret = os.environ.get(SECRET_ENV) if callback else None
    if callback is None:
        return secret
    if not secret:
        raise _fail(f"--callback needs a key: --cb-secret-file FILE or ${SECRET_ENV}", EXIT_USAGE)
    try:
        allowed = Destinations(allow).allows(callback)
    except CertifiedError as exc:
        raise _fail(f"--callback-allow: {exc}", EXIT_USAGE) from None
    if not (allowed or (certified is not None and nickname_url(callback))):
        raise _fail(
            f"--callback: {callback!r} is not allowed: use a service nickname of"
            " --certified-config or name its prefix with --callback-allow",
            EXIT_USAGE,
        )
    return secret


serve_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
tools_app = typer.Typer(
    add_completion=False, pretty_exceptions_enable=False, help="Move files through a buffer."
)


def _fail(msg: str, code: int) -> NoReturn:
    fail("nngstream", msg, code)


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        where = _OPTION_NAMES.get(field, field)
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}" if where else msg)
    return "; ".join(lines)


@serve_app.command(
    help="Buffer messages from producers (IN_URL) to consumers (OUT_URL). "
    "Prints metrics as JSON lines; exits 0 once the stream ended and was delivered. "
    "See also: nngstream push --help, nngstream pull --help."
)
def serve(
    in_url: str = typer.Argument(..., help="producers' address, e.g. tcp://0.0.0.0:5000"),
    out_url: str = typer.Argument(..., help="consumers' address, e.g. tcp://0.0.0.0:5001"),
    in_proto: Proto = typer.Option(Proto.NNG, "--in-proto", help="nng (Pull0) or zmq (PULL)"),
    out_proto: Proto = typer.Option(Proto.NNG, "--out-proto", help="nng (Push0) or zmq (PUSH)"),
    max_bytes: str = typer.Option("1GiB", "--max-bytes", help="bound on buffered bytes"),
    max_messages: int = typer.Option(100_000, "--max-messages", help="bound on messages"),
    when_full: WhenFull = typer.Option(WhenFull.BLOCK, "--when-full"),
    delivery: Delivery = typer.Option(
        Delivery.AT_MOST_ONCE, "--delivery", help="acked: credit, acks, redelivery (NNG)"
    ),
    in_delivery: Delivery = typer.Option(
        Delivery.AT_MOST_ONCE,
        "--in-delivery",
        help="acked: --dial-in an acked or keyed buffer's OUT, as one of its consumers",
    ),
    metrics_interval: float = typer.Option(10.0, "--metrics-interval", help="seconds"),
    callback: str | None = typer.Option(None, "--callback", help="URL for signed metrics"),
    cb_secret_file: Path | None = typer.Option(
        None,
        "--cb-secret-file",
        help=f"file holding the callbacks' HMAC key (else ${SECRET_ENV}; never on argv)",
    ),
    callback_allow: list[str] = typer.Option(
        [],
        "--callback-allow",
        help="URL prefix --callback may use (repeatable); service nicknames of"
        " --certified-config are always allowed",
    ),
    certified_config: Path | None = typer.Option(
        None, "--certified-config", help="certified config dir: mTLS identity for --callback"
    ),
    idle_timeout: float | None = typer.Option(
        None, "--idle-timeout", help="fail if no producer connects / nothing drains this long"
    ),
    producers: int | None = typer.Option(
        None, "--producers", help="end only after N producers connected and left (MPI ranks)"
    ),
    dial_in: bool = typer.Option(False, "--dial-in", help="dial IN_URL (another buffer's OUT)"),
    dial_out: bool = typer.Option(False, "--dial-out", help="dial OUT_URL (another's IN)"),
    linger: float = typer.Option(
        5.0, "--linger", help="seconds before giving up a delivery lost with a vanished consumer"
    ),
    dial_timeout: float = typer.Option(10.0, "--dial-timeout", help="first dial, seconds"),
    end_timeout: float = typer.Option(
        60.0, "--end-timeout", help="seconds to wait for consumers to leave after the end"
    ),
    spill: Path | None = typer.Option(
        None, "--spill", help="directory: when full, keep messages on disk instead of blocking"
    ),
    spill_max_bytes: str = typer.Option("100GiB", "--spill-max-bytes", help="bound on spill"),
    ready_file: Path | None = typer.Option(
        None, "--ready-file", help="write the addresses in use (JSON) here once listening"
    ),
    route_by: str | None = typer.Option(
        None,
        "--route-by",
        help="keyed routing by this msgpack header field, e.g. frame_number (NNG; ZMQ:"
        " ROUTER OUT, key in the first part)",
    ),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="debug logs on stderr"),
) -> None:
    configure_json_logging("DEBUG" if verbose else "INFO")
    cb_secret = _callback_secret(callback, cb_secret_file, callback_allow, certified_config)
    try:
        settings = BufferSettings(
            in_url=in_url,
            out_url=out_url,
            in_proto=in_proto,
            out_proto=out_proto,
            max_bytes=max_bytes,
            max_messages=max_messages,
            when_full=when_full,
            delivery=delivery,
            metrics_interval=metrics_interval,
            callback=callback,
            cb_secret=cb_secret,
            certified_config=certified_config,
            idle_timeout=idle_timeout,
            producers=producers,
            dial_in=dial_in,
            dial_out=dial_out,
            linger=linger,
            dial_timeout=dial_timeout,
            end_timeout=end_timeout,
            spill=spill,
            spill_max_bytes=spill_max_bytes,
            ready_file=ready_file,
            route_by=route_by,
            in_delivery=in_delivery,
        )
    except ValidationError as exc:
        raise _fail(_explain(exc), EXIT_USAGE) from None
    reuse_freed_memory()  # this process is the buffer: see malloc.py
    buffer = Buffer(settings)
    requests = 0  # SIGTERM/SIGINT received: the first stops the buffer, the next aborts it
    started = False

    def act() -> None:
        if requests == 1:
            buffer.stop()
        elif requests > 1:
            buffer.abort()

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal requests
        requests += 1
        if started:  # (a signal during start() is acted on once it returned)
            act()

    # before start(): a SIGTERM once the ports listen must stop the buffer, not kill it
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        buffer.start()
    except NngstreamError as exc:
        raise _fail(str(exc), EXIT_FAILED) from None
    except Exception as exc:  # e.g. an unreadable --certified-config
        raise _fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED) from None
    started = True
    act()
    while (state := buffer.wait(0.2)) is None:
        pass
    if state is not State.DONE:
        raise typer.Exit(EXIT_FAILED)


@tools_app.command("push", help="Send each FILE as one message to URL (a buffer's IN).")
def push_cmd(
    files: list[Path] = typer.Argument(..., help="files to send, in order"),
    to: str = typer.Option(..., "--to", help="address to dial, e.g. tcp://host:5000"),
    dial: int = typer.Option(1, "--dial", help="N producer connections sharing the files"),
    proto: Proto = typer.Option(Proto.NNG, "--proto"),
    dial_timeout: float = typer.Option(10.0, "--dial-timeout", help="seconds"),
) -> None:
    from .tools import push

    try:
        report = push(files, to, proto, dial=dial, dial_timeout=dial_timeout)
    except (NngstreamError, ValueError) as exc:
        raise _fail(str(exc), EXIT_FAILED) from None
    typer.echo(json.dumps(report.as_dict()))
    typer.echo(
        f"pushed {report.messages} messages, {format_size(report.bytes)}"
        f" at {format_size(report.rate)}/s",
        err=True,
    )


@tools_app.command("pull", help="Receive from URL (a buffer's OUT) until the stream ends.")
def pull_cmd(
    url: str = typer.Argument(..., help="address to dial, e.g. tcp://host:5001"),
    out: Path | None = typer.Option(None, "--out", help="save messages as DIR/NNNNNNNN.msg"),
    count: bool = typer.Option(False, "--count", help="print only the number of messages"),
    proto: Proto = typer.Option(Proto.NNG, "--proto"),
    delivery: Delivery = typer.Option(
        Delivery.AT_MOST_ONCE, "--delivery", help="acked: the buffer runs --delivery acked"
    ),
    dial_timeout: float = typer.Option(10.0, "--dial-timeout", help="seconds"),
    idle_timeout: float | None = typer.Option(
        None, "--idle-timeout", help="give up after this many seconds without a message"
    ),
    check: str | None = typer.Option(
        None, "--check", help="hdf5: report per-producer gaps from the rank/seq attributes"
    ),
    keyed: bool = typer.Option(
        False, "--keyed", help="be one consumer group of a --route-by buffer's ZMQ OUT"
    ),
    groups: int | None = typer.Option(
        None, "--groups", min=1, help="--keyed: consumer groups of this job (wait for all)"
    ),
) -> None:
    from .tools import Report, pull

    if check not in (None, "hdf5"):
        raise _fail(f"--check: unknown format {check!r} (known: hdf5)", EXIT_USAGE)

    def progress(r: Report) -> None:
        typer.echo(
            f"pulled {r.messages} messages, {format_size(r.bytes)} at {format_size(r.rate)}/s",
            err=True,
        )

    try:
        report = pull(
            url,
            proto,
            out_dir=out,
            delivery=delivery,
            dial_timeout=dial_timeout,
            idle_timeout=idle_timeout,
            progress=None if count else progress,
            check_hdf5=check == "hdf5",
            keyed=keyed,
            groups=groups,
        )
    except (NngstreamError, ValueError, OSError) as exc:
        raise _fail(str(exc), EXIT_FAILED) from None
    typer.echo(str(report.messages) if count else json.dumps(report.as_dict()))
    if not count:
        progress(report)
    if report.sequence is not None and report.sequence["gaps"]:
        typer.echo(
            f"nngstream: warning: {report.sequence['gaps']} message(s) missing from the"
            " per-producer sequences received here (with several consumers, those the"
            " others received count too)",
            err=True,
        )
    if report.expected is not None and report.expected != report.messages:
        typer.echo(
            f"nngstream: warning: received {report.messages} message(s), the buffer's info"
            f" message says {report.expected} were sent here",
            err=True,
        )
    if report.end is not None and report.end.lost_max:
        typer.echo(
            f"nngstream: warning: the buffer reports up to {report.end.lost_max} message(s)"
            " lost with consumers that vanished (an upper bound)",
            err=True,
        )


def main(argv: list[str] | None = None) -> None:
    """Console entry point: `push`/`pull` go to the toolkit, anything else runs a buffer."""
    args = sys.argv[1:] if argv is None else argv
    app = tools_app if args and args[0] in ("push", "pull") else serve_app
    run_typer(app, "nngstream", (NngstreamError,), argv=args)
