"""`lclstreamer` command line: run a configuration (under mpirun or alone), validate it,
or print the configuration schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn

import typer

from certified.cliutil import fail, run_typer

from .config import explain_config, native_yaml, read_config_text
from .errors import ConfigError, LclstreamerError

app = typer.Typer(
    add_completion=False,
    help="Stream events through the pipeline a YAML file describes (run it under mpirun -n N).",
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int) -> NoReturn:
    fail("lclstreamer", message, code)


@app.callback(invoke_without_command=True)
def run(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "-c", "--config", help="YAML configuration file."),
    max_events: int | None = typer.Option(
        None, "-n", "--max-events", min=1, help="Stop after this many events of the run."
    ),
    validate: bool = typer.Option(False, "--validate", help="Check the configuration and exit."),
    explain: bool = typer.Option(
        False,
        "--explain",
        help="With --validate: print the native form of the configuration (for an upstream "
        "lclstreamer file, what each upstream entry became).",
    ),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Rate and count lines on rank 0's stderr."
    ),
) -> None:
    """Run CONFIG: every rank streams its share of the events; rank 0 prints a JSON summary."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        _fail("no configuration given (use -c CONFIG; `lclstreamer --help` for more)", 2)
    if explain and not validate:
        _fail("--explain goes with --validate", 2)
    if validate:
        try:
            cfg, notes = explain_config(read_config_text(config), str(config))
        except ConfigError as exc:
            _fail(str(exc), exc.exit_code)
        if explain:
            typer.echo(native_yaml(cfg, notes), nl=False)
        typer.echo(
            f"{config}: valid ({cfg.event_source.type} -> {len(cfg.data_sources)} fields"
            f" -> {cfg.data_serializer.type} -> "
            f"{', '.join(h.type for h in cfg.data_handlers)})"
        )
        return
    from .job import run_job

    raise typer.Exit(run_job(config, max_events, progress))


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
    run_typer(app, "lclstreamer", (LclstreamerError,))


if __name__ == "__main__":
    sys.exit(main())
