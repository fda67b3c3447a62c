"""The suite's one CLI runner: every known error is one `PROG: error: ...` line on stderr.

Exit codes are the same for every command: 0 success, 1 a runtime failure (a server
refused, a file could not be written, a job failed), 2 a usage or configuration error
(bad option, invalid config file). An exception class says which by its `exit_code`
attribute (1 when it has none).
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Sequence
from typing import NoReturn

import typer

from .errors import CertifiedError

EXIT_RUNTIME = 1
EXIT_USAGE = 2


def fail(prog: str, message: str, code: int = EXIT_RUNTIME) -> NoReturn:
    """Print `PROG: error: MESSAGE` on stderr and exit with `code`."""
    typer.echo(f"{prog}: error: {message}", err=True)
    raise SystemExit(code)


def run_typer(
    app: typer.Typer,
    prog: str,
    errors: tuple[type[BaseException], ...] = (),
    argv: Sequence[str] | None = None,
) -> NoReturn:
    """Run `app` as `prog`; CertifiedError, `errors` and click usage errors become one
    line and the exit code their class names (`exit_code`, default 1; usage errors 2)."""
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = command.main(args=args, prog_name=prog, standalone_mode=False)
    except typer.Abort:
        fail(prog, "aborted", 130)
    except typer.TyperException as exc:  # click's usage errors (exit_code 2)
        if not exc.format_message():  # no arguments at all: click printed the help
            raise SystemExit(exc.exit_code) from None
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        fail(prog, exc.format_message() + hint, exc.exit_code)
    except (CertifiedError, *errors) as exc:
        fail(prog, str(exc), getattr(exc, "exit_code", EXIT_RUNTIME))
    raise SystemExit(code if isinstance(code, int) else 0)


class KeyTypeChoice(enum.StrEnum):
    """Key types a CLI offers (`certified.pki.KEY_TYPES`)."""

    ed25519 = "ed25519"
    p256 = "p256"
