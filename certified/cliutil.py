"""Running typer CLIs so that user errors print one clear line, never a traceback."""

from __future__ import annotations

import typer

from .errors import CertifiedError


def run_typer(app: typer.Typer, errors: tuple[type[BaseException], ...] = ()) -> None:
    """Run `app`; CertifiedError (and `errors`) become `error: ...` on stderr, exit 1."""
    try:
        app()
    except (CertifiedError, *errors) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
