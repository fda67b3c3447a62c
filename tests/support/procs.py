"""Subprocesses that tests start and always clean up (whole process group)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from .ports import wait_for_port


class Proc:
    """A subprocess in its own session, with its output captured to files."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: str | os.PathLike | None = None,
        env: dict[str, str] | None = None,
        logdir: Path,
        name: str,
    ) -> None:
        self.args = [str(a) for a in args]
        self.name = name
        self.stdout_path = logdir / f"{name}.stdout"
        self.stderr_path = logdir / f"{name}.stderr"
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self._out = open(self.stdout_path, "wb")  # noqa: SIM115 (lives as long as the process)
        self._err = open(self.stderr_path, "wb")  # noqa: SIM115
        self.popen = subprocess.Popen(
            self.args,
            cwd=cwd,
            env=full_env,
            stdout=self._out,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        self._out.flush()
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        self._err.flush()
        return self.stderr_path.read_text(errors="replace")

    def wait_port(self, port: int, timeout: float = 20.0) -> None:
        """Wait for the port to open; fail early with the process output if it died."""
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode} before listening on"
                    f" {port}\nstdout:\n{self.stdout()}\nstderr:\n{self.stderr()}"
                )
            try:
                wait_for_port(port, timeout=0.2)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{self.name} not listening on {port}\nstderr:\n{self.stderr()}"
                    ) from None

    def wait(self, timeout: float = 30.0) -> int:
        return self.popen.wait(timeout=timeout)

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM the process group, then SIGKILL after `grace` seconds."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=grace)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        kill_group(self.popen.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)
        self._out.close()
        self._err.close()
        return self.popen.returncode


def kill_group(pgid: int) -> None:
    """SIGKILL every process left in a process group (no error if it is gone)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def job_processes(root: Path) -> list[psutil.Process]:
    """Live processes of psik jobs under `root`: wrappers, and anything with $base inside
    root (job scripts and what they started)."""
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


class ProcessSupervisor:
    """Starts subprocesses for one test and stops all of them at teardown, then kills
    what is left of psik jobs under the job folders it was told about (`reap_jobs`):
    job wrappers outlive psik-api on purpose, so stopping the service does not end them."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[Proc] = []
        self.job_roots: list[Path] = []

    def reap_jobs(self, root: Path) -> None:
        """At teardown, kill every process of a psik job under `root`."""
        self.job_roots.append(root)

    def __call__(self, args: Sequence[str], *, name: str | None = None, **kw) -> Proc:
        name = name or f"proc{len(self.procs)}"
        proc = Proc(args, logdir=self.logdir, name=name, **kw)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        for root in self.job_roots:
            for proc in job_processes(root):
                with contextlib.suppress(psutil.Error):
                    proc.kill()
