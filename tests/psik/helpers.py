"""psik test helpers: waiting on job state, finding a job's processes, running the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TypeVar

import psutil

from psik.jobdir import JobDir
from tests.support.waiting import wait_until

T = TypeVar("T")
PSIK = [sys.executable, "-m", "psik.cli"]


def job_processes(root: Path) -> list[psutil.Process]:
    """Live processes of jobs under `root`: wrappers, and anything with $base inside root."""
    root_s = str(root)
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = proc.info["cmdline"] or []
            if "psik.wrapper" in cmd and any(root_s in part for part in cmd):
                found.append(proc)
                continue
            if proc.environ().get("base", "").startswith(root_s):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


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


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
