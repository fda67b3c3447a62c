"""psik's exceptions, each carrying a message fit to show a user."""

from __future__ import annotations

from pydantic import ValidationError


class PsikError(Exception):
    """Base of every error psik reports to a user."""


class SpecError(PsikError):
    """A JobSpec or config file could not be read or is invalid (CLI exit code 2)."""

    exit_code = 2


class JobNotFound(PsikError):
    """No job with that id under the prefix."""


class IllegalTransition(PsikError):
    """A state change the state machine does not allow."""


class BackendError(PsikError):
    """The scheduler refused or failed an operation."""


def describe_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: `source: field.path: message`."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(document)"
        lines.append(f"{source}: {loc}: {err['msg']}")
    return "\n".join(lines)
