"""Schedulers behind one small protocol; adding PBS or LSF is one module and one line here
(REGISTRY below). Everything a scheduler knows (its script, its reserved options, how to
tell a vanished job) lives in its module."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from functools import cache
from typing import ClassVar, Protocol

from ..errors import SpecError
from ..jobdir import JobDir
from ..models import BackendConfig, JobSpec

#: BackendConfig.type -> "module:class" of a class following `Backend`.
REGISTRY: dict[str, str] = {
    "local": "psik.backends.local:LocalBackend",
    "slurm": "psik.backends.slurm:SlurmBackend",
}


class Backend(Protocol):
    """What psik needs from a scheduler. Built as `cls(BackendConfig, kill_grace, via)`:
    `via` prefixes every command that acts on the job (the wrapper, sbatch, scancel) to
    run it as the job's user (psik.runas.via_sudo); empty, they run as this process."""

    #: JobSpec.attributes keys this scheduler sets itself (refused in every JobSpec).
    reserved_attributes: ClassVar[frozenset[str]]

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


@cache
def backend_class(kind: str) -> type[Backend]:
    """The class registered for backend type `kind` (imported on first use)."""
    try:
        module, name = REGISTRY[kind].split(":")
    except KeyError:
        raise SpecError(f"unknown backend type {kind!r} (known: {', '.join(REGISTRY)})") from None
    return getattr(importlib.import_module(module), name)


def make_backend(cfg: BackendConfig, kill_grace: float, via: Sequence[str] = ()) -> Backend:
    """Build the backend for one BackendConfig (acting as another user through `via`)."""
    return backend_class(cfg.type)(cfg, kill_grace, tuple(via))  # type: ignore[call-arg]


@cache
def _reserved() -> tuple[str, ...]:
    return tuple(sorted(set().union(*(backend_class(k).reserved_attributes for k in REGISTRY))))


def reserved_attribute(key: str) -> str | None:
    """The reserved option `key` would set, for any registered backend. Prefixes count:
    sbatch takes any unambiguous prefix of a long option (`--accou` is `--account`)."""
    for name in _reserved():
        if name.startswith(key):
            return name
    return None


def parse_native(info: str) -> tuple[str, str]:
    """Split a queued row's info `<type>:<native id>`."""
    kind, sep, native = info.partition(":")
    if not sep or not native:
        raise ValueError(f"queued info {info!r} is not <type>:<native id>")
    return kind, native


def wrapper_command(job: JobDir, jobndx: int) -> list[str]:
    """The command that runs one job inside its allocation (this interpreter's psik)."""
    return [sys.executable, "-m", "psik.wrapper", str(job.base), str(jobndx)]
