"""`lclstreamer` command line: run a configuration (under mpirun or alone), validate it,
or print the configuration schema."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import typer

from .config import load_config
from .errors import ConfigError, LclstreamerError
from .stats import Progress, RankStats, as_dict, summarize

app = typer.Typer(
    add_completion=False,
    help="Stream events through the pipeline a YAML file describes (run it under mpirun -n N).",
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int) -> None:
    typer.echo(f"lclstreamer: error: {message}", err=True)
    raise typer.Exit(code)


def _collective_check(comm: Any, error: LclstreamerError | None) -> None:
    """Every rank learns whether any rank failed; rank 0 reports, every rank exits."""
    errors = comm.allgather(None if error is None else (type(error).__name__, str(error)))
    failed = [(rank, e) for rank, e in enumerate(errors) if e is not None]
    if not failed:
        return
    code = 2 if any(e[0] == "ConfigError" for _, e in failed) else 1
    if comm.rank == 0:
        texts = {e[1] for _, e in failed}
        if len(texts) == 1:
            who = (
                ""
                if len(failed) == comm.size
                else f" (rank {', '.join(str(r) for r, _ in failed)})"
            )
            _report(texts.pop() + who)
        else:
            for rank, e in failed:
                _report(f"rank {rank}: {e[1]}")
    raise typer.Exit(code)


def _unexpected(exc: BaseException) -> str:
    """One line for an exception we did not anticipate (full traceback with LCLSTREAMER_DEBUG=1)."""
    if os.environ.get("LCLSTREAMER_DEBUG") == "1":
        traceback.print_exception(exc)
    return f"unexpected {type(exc).__name__}: {exc}"


def _report(message: str) -> None:
    typer.echo(f"lclstreamer: error: {message}", err=True)


@app.callback(invoke_without_command=True)
def run(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "-c", "--config", help="YAML configuration file."),
    max_events: int | None = typer.Option(
        None, "-n", "--max-events", min=1, help="Stop after this many events of the run."
    ),
    validate: bool = typer.Option(False, "--validate", help="Check the configuration and exit."),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Rate and count lines on rank 0's stderr."
    ),
) -> None:
    """Run CONFIG: every rank streams its share of the events; rank 0 prints a JSON summary."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        _fail("no configuration given (use -c CONFIG; `lclstreamer --help` for more)", 2)
    if validate:
        try:
            cfg = load_config(config)
        except ConfigError as exc:
            _fail(str(exc), exc.exit_code)
        typer.echo(
            f"{config}: valid ({cfg.event_source.type} -> {len(cfg.data_sources)} fields"
            f" -> {cfg.data_serializer.type} -> "
            f"{', '.join(h.type for h in cfg.data_handlers)})"
        )
        return
    _stream(config, max_events, progress)


def _stream(config: Path, max_events: int | None, progress: bool) -> None:
    from .engine import Engine
    from .mpi import world
    from .protocols import StreamContext

    comm = world()
    cfg = engine = None
    error: LclstreamerError | None = None
    try:
        cfg = load_config(config)
        ctx = StreamContext(comm.rank, comm.size, cfg.source_identifier, max_events)
        engine = Engine.open(cfg, ctx)
    except LclstreamerError as exc:
        error = exc
    except Exception as exc:  # an unexpected failure must still reach the collective check
        error = LclstreamerError(_unexpected(exc))
    try:
        _collective_check(comm, error)
    except typer.Exit:
        if engine is not None:
            engine.close()
        raise

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    bar = Progress(f"rank 0 of {comm.size}") if progress and comm.rank == 0 else None
    stats = RankStats()
    try:
        engine.stream(stats, on_batch=bar.update if bar else lambda s: None, stop=stop.is_set)
    except Exception as exc:
        if bar:
            bar.finish()
        text = str(exc) if isinstance(exc, LclstreamerError) else _unexpected(exc)
        _report(f"rank {comm.rank}: {text}" if comm.size > 1 else text)
        if comm.size > 1:
            comm.abort(1)
        raise typer.Exit(1) from None
    if bar:
        bar.update(stats, force=True)
        bar.finish()
    everyone = comm.gather(as_dict(stats))
    if comm.rank == 0 and everyone is not None:
        summary = summarize([RankStats(**s) for s in everyone])
        if stop.is_set():
            summary["interrupted"] = True
        typer.echo(json.dumps(summary))
    if stop.is_set():
        raise typer.Exit(130)


@app.command()
def schema(
    indent: int = typer.Option(2, help="JSON indentation."),
    without_handlers: bool = typer.Option(
        False, "--without-handlers", help="Schema of a transfer request (no data_handlers)."
    ),
) -> None:
    """Print the JSON schema of a configuration file."""
    from .models import PipelineConfig, json_schema

    doc = PipelineConfig.model_json_schema() if without_handlers else json_schema()
    typer.echo(json.dumps(doc, indent=indent))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="lclstreamer")


if __name__ == "__main__":
    sys.exit(main())
