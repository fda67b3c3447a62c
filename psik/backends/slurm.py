"""The SLURM backend: sbatch (held until `queued` is recorded), scontrol release, scancel."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable
from typing import ClassVar

from ..errors import BackendError
from ..jobdir import JobDir
from ..models import BackendConfig, JobSpec
from ..sbatch import parse_sbatch_output, render_sbatch
from . import wrapper_command


def _run(args: list[str], timeout: float = 60.0, via: tuple[str, ...] = ()) -> str:
    """Run a SLURM command (as another user through `via`); its stdout, or BackendError."""
    try:
        out = subprocess.run(
            [*via, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise BackendError(f"{args[0]} not found: is SLURM installed on this host?") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"{args[0]} did not answer within {timeout:.0f} s") from None
    if out.returncode != 0:
        detail = (out.stderr or out.stdout).strip()
        raise BackendError(f"{' '.join(args[:2])} failed ({out.returncode}): {detail}")
    return out.stdout


#: scontrol JobState values of a job that may still run or record its outcome.
_LIVE = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING",
     "SIGNALING", "STAGE_OUT", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
)  # fmt: skip


class SlurmBackend:
    """Submits one batch job per run. The native id is the SLURM job id."""

    #: sbatch options psik or the operator (BackendConfig) sets; a JobSpec may not.
    reserved_attributes: ClassVar[frozenset[str]] = frozenset(
        {
            "account",
            "array",
            "chdir",
            "clusters",
            "cpus-per-task",
            "error",
            "exclusive",
            "export",
            "gpus",
            "gpus-per-task",
            "hold",
            "input",
            "job-name",
            "nodes",
            "ntasks",
            "ntasks-per-node",
            "open-mode",
            "output",
            "partition",
            "qos",
            "reservation",
            "time",
            "uid",
            "gid",
            "wrap",
            # these would let a job read or reset the environment or working directory psik sets
            "export-file",
            "get-user-env",
            "workdir",
        }
    )

    def __init__(self, cfg: BackendConfig, kill_grace: float, via: tuple[str, ...] = ()) -> None:
        self.cfg = cfg
        self.kill_grace = kill_grace
        self.via = via  # sbatch, release and scancel run as the job's user through it

    def submit(self, job: JobDir, jobndx: int, on_queued: Callable[[str], None]) -> str:
        spec = job.spec()
        workdir = job.workdir(spec)
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot create directory {workdir}: {exc.strerror}") from None
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
            native = parse_sbatch_output(
                _run(["sbatch", "--parsable", "--hold", str(path)], via=self.via)
            )
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        try:
            on_queued(native)
        except BaseException:
            self._scancel(native)
            raise
        try:
            _run(["scontrol", "release", native], via=self.via)
        except BackendError:
            self._scancel(native)
            raise
        return native

    def _scancel(self, native: str) -> None:
        with contextlib.suppress(BackendError):
            _run(["scancel", native], via=self.via)

    def cancel(self, job: JobDir, native_id: str) -> None:
        try:
            _run(["scancel", native_id], via=self.via)
        except BackendError as exc:
            text = str(exc)
            if "already completing" in text or "Invalid job id" in text:
                return  # it ended on its own meanwhile
            raise

    def vanished(self, job: JobDir, native_id: str) -> str | None:
        try:
            out = _run(["scontrol", "-o", "show", "job", native_id])
        except BackendError as exc:
            if "Invalid job id" in str(exc):
                return f"SLURM no longer knows job {native_id}"
            return None  # cannot tell now; ask again later
        fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
        state = fields.get("JobState", "")
        if state in _LIVE:
            return None
        reason = fields.get("Reason", "None")
        return f"SLURM job {native_id} is {state} (reason {reason}) and recorded no outcome"

    def runtime_env(self, spec: JobSpec) -> dict[str, str]:
        nodes = os.environ.get("SLURM_JOB_NUM_NODES", str(spec.resources.nodes))
        return {"mpirun": "srun", "nodes": nodes}
