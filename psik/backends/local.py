"""The local backend: each run is a detached wrapper process in its own session."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import ClassVar

import psutil

from ..errors import BackendError
from ..jobdir import JobDir
from ..models import BackendConfig, JobSpec
from ..procs import kill_session, wait_gone
from . import wrapper_command


class LocalBackend:
    """Runs jobs on this host. The native id is the wrapper's pid (= its session id)."""

    reserved_attributes: ClassVar[frozenset[str]] = frozenset()  # attributes are unused

    def __init__(self, cfg: BackendConfig, kill_grace: float, via: tuple[str, ...] = ()) -> None:
        self.cfg = cfg
        self.kill_grace = kill_grace
        self.via = via

    def submit(self, job: JobDir, jobndx: int, on_queued: Callable[[str], None]) -> str:
        # The wrapper blocks on its stdin, a pipe (the gate), until on_queued has recorded
        # `queued`. (Stdin, not another fd: sudo closes every descriptor above 2.)
        # Through sudo the native id is sudo's pid: sudo keeps the caller's real uid, so
        # this process may signal it, and it relays SIGTERM to the wrapper.
        gate_r, gate_w = os.pipe()
        try:
            with open(job.console, "ab") as console:
                proc = subprocess.Popen(
                    [*self.via, *wrapper_command(job, jobndx), "--gate", "0"],
                    stdin=gate_r,
                    stdout=console,
                    stderr=console,
                    cwd=job.base,
                    start_new_session=True,
                )
        except OSError as exc:
            os.close(gate_w)
            raise BackendError(f"cannot start the job wrapper: {exc}") from None
        finally:
            os.close(gate_r)
        # Reap it when it ends, so a long-lived submitter (psik-api) keeps no zombies.
        threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
        native = str(proc.pid)
        try:
            on_queued(native)
        except BaseException:
            os.close(gate_w)  # EOF without "go": the wrapper exits without running
            kill_session(proc.pid)
            raise
        os.write(gate_w, b"go")
        os.close(gate_w)
        return native

    def cancel(self, job: JobDir, native_id: str) -> None:
        pid = int(native_id)
        if not _is_wrapper_of(pid, job):
            return  # already gone (or the pid was reused by someone else)
        try:
            os.killpg(pid, signal.SIGTERM)  # the wrapper forwards it to the script's group
        except ProcessLookupError:
            return
        if not wait_gone(pid, self.kill_grace + 5.0):
            job.note(f"wrapper {pid} still alive after SIGTERM; killing its session")
        kill_session(pid)  # anything left in the session, wrapper included

    def runtime_env(self, spec: JobSpec) -> dict[str, str]:
        return {"mpirun": shutil.which("mpirun") or "mpirun", "nodes": "1"}

    def vanished(self, job: JobDir, native_id: str) -> str | None:
        if _is_wrapper_of(int(native_id), job):
            return None
        left = stop_job_processes(job)
        extra = f"; stopped {left} process(es) it left running" if left else ""
        return f"job wrapper (pid {native_id}) vanished without recording an outcome{extra}"


def stop_job_processes(job: JobDir) -> int:
    """SIGKILL every process running with this job's `$base`; return how many."""
    count = 0
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("base") == str(job.base):
                proc.kill()
                count += 1
        except (psutil.Error, OSError):
            continue
    return count


def _is_wrapper_of(pid: int, job: JobDir) -> bool:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = proc.cmdline()
    except psutil.Error:
        return False
    return "psik.wrapper" in cmdline and str(job.base) in cmdline
