"""psik test helpers: waiting on job state, finding a job's processes, running the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TypeVar

from psik.jobdir import JobDir
from tests.support.procs import job_processes  # noqa: F401  (re-exported for psik tests)
from tests.support.waiting import wait_until

T = TypeVar("T")
PSIK = [sys.executable, "-m", "psik.cli"]


def final_state(job: JobDir, timeout: float) -> str:
    """Wait until the job's latest run is final and its wrapper has exited; return the state."""
    state = wait_until(
        lambda: job.current().state.final and job.current().state.value,
        timeout,
        f"job {job.jobid} to finish",
    )
    wait_until(lambda: not job_processes(job.base), 15, f"job {job.jobid} processes to exit")
    return state


def states(job: JobDir) -> list[tuple[int, str]]:
    return [(t.jobndx, t.state.value) for t in job.transitions()]


def psik_cli(*args: str, config: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `python -m psik.cli -c CONFIG ARGS...` and capture its output."""
    return subprocess.run(
        [*PSIK, "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
