"""The SLURM backend: sbatch (held until `queued` is recorded), scontrol release, scancel."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable

from ..errors import BackendError
from ..jobdir import JobDir
from ..models import BackendConfig, JobSpec
from ..sbatch import parse_sbatch_output, render_sbatch
from . import wrapper_command


def _run(args: list[str], timeout: float = 60.0) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise BackendError(f"{args[0]} not found: is SLURM installed on this host?") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"{args[0]} did not answer within {timeout:.0f} s") from None
    if out.returncode != 0:
        detail = (out.stderr or out.stdout).strip()
        raise BackendError(f"{' '.join(args[:2])} failed ({out.returncode}): {detail}")
    return out.stdout


class SlurmBackend:
    """Submits one batch job per run. The native id is the SLURM job id."""

    def __init__(self, cfg: BackendConfig, kill_grace: float) -> None:
        self.cfg = cfg
        self.kill_grace = kill_grace

    def submit(self, job: JobDir, jobndx: int, on_queued: Callable[[str], None]) -> str:
        spec = job.spec()
        workdir = job.workdir(spec)
        workdir.mkdir(parents=True, exist_ok=True)
        script = render_sbatch(
            spec,
            self.cfg,
            wrapper_command(job, jobndx),
            console=str(job.console),
            workdir=str(workdir),
        )
        path = job.base / f"sbatch.{jobndx}"
        path.write_text(script)
        try:
            native = parse_sbatch_output(_run(["sbatch", "--parsable", "--hold", str(path)]))
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        try:
            on_queued(native)
        except BaseException:
            self._scancel(native)
            raise
        try:
            _run(["scontrol", "release", native])
        except BackendError:
            self._scancel(native)
            raise
        return native

    def _scancel(self, native: str) -> None:
        with contextlib.suppress(BackendError):
            _run(["scancel", native])

    def cancel(self, job: JobDir, native_id: str) -> None:
        try:
            _run(["scancel", native_id])
        except BackendError as exc:
            text = str(exc)
            if "already completing" in text or "Invalid job id" in text:
                return  # it ended on its own meanwhile
            raise

    def runtime_env(self, spec: JobSpec) -> dict[str, str]:
        nodes = os.environ.get("SLURM_JOB_NUM_NODES", str(spec.resources.nodes))
        return {"mpirun": "srun", "nodes": nodes}
