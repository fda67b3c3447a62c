"""Schedulers behind one small protocol; adding PBS or LSF is one module and one line here."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Protocol

from ..errors import SpecError
from ..jobdir import JobDir
from ..models import BackendConfig, JobSpec


class Backend(Protocol):
    """What psik needs from a scheduler."""

    def submit(self, job: JobDir, jobndx: int, on_queued: Callable[[str], None]) -> str:
        """Queue run `jobndx` of `job` and return the scheduler's id for it.

        The job must not start before `on_queued(native_id)` returns; if it raises, the
        submission is withdrawn and the exception propagates.
        """
        ...

    def cancel(self, job: JobDir, native_id: str) -> None:
        """Stop the run with that id, whether it is waiting or running."""
        ...

    def runtime_env(self, spec: JobSpec) -> dict[str, str]:
        """`mpirun` and `nodes` as seen from inside the running job."""
        ...

    def vanished(self, job: JobDir, native_id: str) -> str | None:
        """None while the run may still be alive; otherwise why it is gone, after stopping
        anything of it left running (the reconciler then records `failed`)."""
        ...


def make_backend(cfg: BackendConfig, kill_grace: float) -> Backend:
    """Build the backend for one BackendConfig."""
    if cfg.type == "local":
        from .local import LocalBackend

        return LocalBackend(cfg, kill_grace)
    if cfg.type == "slurm":
        from .slurm import SlurmBackend

        return SlurmBackend(cfg, kill_grace)
    raise SpecError(f"unknown backend type {cfg.type!r}")


def parse_native(info: str) -> tuple[str, str]:
    """Split a queued row's info `<type>:<native id>`."""
    kind, sep, native = info.partition(":")
    if not sep or not native:
        raise ValueError(f"queued info {info!r} is not <type>:<native id>")
    return kind, native


def wrapper_command(job: JobDir, jobndx: int) -> list[str]:
    """The command that runs one job inside its allocation (this interpreter's psik)."""
    return [sys.executable, "-m", "psik.wrapper", str(job.base), str(jobndx)]
