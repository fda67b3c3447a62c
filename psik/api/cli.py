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


@app.command()
def check(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Settings file (same search order as serve)."
    ),
) -> None:
    """Validate the settings and print them (JSON)."""
    from .settings import load_settings

    typer.echo(load_settings(config).model_dump_json(indent=2))


@app.command()
def sudoers(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Settings file (its deny_logins are excluded)."
    ),
    user: str | None = typer.Option(
        None, "--user", help="The account psik-api runs as (default: the current user)."
    ),
    users_group: str | None = typer.Option(
        None,
        "--users-group",
        help="Only members of this group may run jobs (else all but the denied).",
    ),
) -> None:
    """Print the sudoers rule run_as caller needs (install it with visudo -f)."""
    import getpass
    import shutil
    import sys

    from ..runas import sudoers_rule
    from .settings import load_settings

    settings = load_settings(config)
    slurm = {c: shutil.which(c) or f"/usr/bin/{c}" for c in ("sbatch", "scontrol", "scancel")}
    rule = sudoers_rule(
        user or getpass.getuser(), sys.executable, slurm, settings.deny_logins, users_group
    )
    typer.echo(rule, nl=False)


def main() -> None:
    run_typer(app, "psik-api", (PsikError,))


if __name__ == "__main__":
    main()
