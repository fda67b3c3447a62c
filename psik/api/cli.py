"""The `psik-api` command: serve the REST API over mTLS."""

from __future__ import annotations

from pathlib import Path

import typer

from certified.cliutil import run_typer

from ..errors import PsikError

app = typer.Typer(
    name="psik-api", help="psik's REST service (mTLS).", no_args_is_help=True, add_completion=False
)


@app.callback()
def _root() -> None:
    """psik's REST service."""


@app.command()
def serve(
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Settings file (else $PSIK_API_CONFIG, $VIRTUAL_ENV/etc/psik-api.yaml, "
        "/etc/psik-api.yaml).",
    ),
    listen: str | None = typer.Option(None, "--listen", help="https://HOST:PORT"),
    certified: Path | None = typer.Option(None, "--certified", help="certified config dir."),
) -> None:
    """Serve until SIGTERM/SIGINT."""
    from certified import Certified
    from certified.serve import run_server

    from .app import create_app
    from .settings import load_settings

    settings = load_settings(config)
    update = {k: v for k, v in {"listen": listen, "certified": certified}.items() if v}
    settings = settings.model_validate({**settings.model_dump(), **update})
    ident = Certified(settings.certified)
    run_server(create_app(settings), settings.listen, certified=ident, crl=settings.crl)


def main() -> None:
    run_typer(app, "psik-api", (PsikError,))


if __name__ == "__main__":
    main()
