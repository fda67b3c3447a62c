"""The `lclstream-api` command: serve the transfer service over mTLS, or check settings."""

from __future__ import annotations

from pathlib import Path

import typer

from certified.cliutil import run_typer
from psik.errors import PsikError

app = typer.Typer(
    name="lclstream-api",
    help="The transfer service (mTLS).",
    no_args_is_help=True,
    add_completion=False,
)

CONFIG = typer.Option(
    None,
    "--config",
    "-c",
    help="Settings file (else $LCLSTREAM_API_CONFIG, $VIRTUAL_ENV/etc/lclstream-api.yaml, "
    "/etc/lclstream-api.yaml).",
)


@app.callback()
def _root() -> None:
    """The transfer service."""


@app.command()
def serve(config: Path | None = CONFIG) -> None:
    """Serve until SIGTERM/SIGINT."""
    from certified import Certified
    from certified.serve import run_server

    from .app import create_app
    from .settings import load_settings

    settings = load_settings(config)
    ident = Certified(settings.certified)
    run_server(create_app(settings), settings.listen, certified=ident, crl=settings.crl)


@app.command()
def check(config: Path | None = CONFIG) -> None:
    """Validate the settings and print them (JSON)."""
    from .settings import load_settings

    typer.echo(load_settings(config).model_dump_json(indent=2))


def main() -> None:
    run_typer(app, "lclstream-api", (PsikError,))


if __name__ == "__main__":
    main()
