"""The execution wrapper: `python -m psik.wrapper BASE JOBNDX [--gate FD]`.

(`python -m psik.wrapper --create PREFIX` instead writes a new job folder from the JSON
`{spec, config, owner, delegated_by}` on stdin and prints its id: psik-api's run_as
caller mode runs both forms as the job's user, see psik.runas.)

Runs inside the job's allocation. Records `active`, runs the spec's script in its own
process group with the job environment, enforces `duration`, forwards SIGTERM/SIGINT/
SIGHUP to the script's group (SIGKILL after the config's kill_grace), and records
`completed`, `failed` (exit code, signal or overrun) or `canceled`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .backends import Backend, make_backend
from .errors import IllegalTransition, PsikError
from .jobdir import JobDir, JobStore
from .jobs import Notify, announce
from .models import Config, JobSpec, JobState
from .outbox import Dispatcher, sender_for
from .procs import group_alive, session_members, signal_group

CANCEL_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def job_environment(
    spec: JobSpec, job: JobDir, jobndx: int, runtime: dict[str, str], parent: dict[str, str]
) -> dict[str, str]:
    """The script's environment: inherited (or scheduler-only), spec.environment, psik's."""
    if spec.inherit_environment:
        env = dict(parent)
    else:
        env = {k: v for k, v in parent.items() if k.startswith(("SLURM_", "PMI_"))}
    env.update(spec.environment)
    env.update(runtime)
    env.update({"jobid": job.jobid, "jobndx": str(jobndx), "base": str(job.base)})
    return env


def _wait_gate(fd: int) -> bool:
    """Block until the submitter writes "go" (True) or closes the pipe first (False)."""
    data = b""
    with os.fdopen(fd, "rb", buffering=0) as gate:
        while chunk := gate.read(16):
            data += chunk
    return data == b"go"


class _Runner:
    """Runs one script and decides how it ended."""

    def __init__(self, job: JobDir, jobndx: int, grace: float) -> None:
        self.job = job
        self.jobndx = jobndx
        self.grace = grace
        self.reason: str | None = None  # "signal N" or "overrun"
        self.exit_reason: str | None = None  # `reason` as it was when the script ended
        self.term_at: float | None = None
        self.pgid: int | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def install(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for sig in CANCEL_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.reason is None:
            self.reason = f"signal {signum}"
            self._terminate()

    def _terminate(self) -> None:
        self.term_at = time.monotonic()
        if self.pgid is not None:
            signal_group(self.pgid, signal.SIGTERM)

    def run(self, argv: list[str], env: dict[str, str], cwd: Path, duration_s: float) -> int:
        with (
            open(self.job.log_path("stdout", self.jobndx), "ab") as out,
            open(self.job.log_path("stderr", self.jobndx), "ab") as err,
        ):
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                process_group=0,
            )  # fmt: skip
        self.pgid = proc.pid
        if self.reason is not None:  # a signal came while we were starting it
            self._terminate()
        deadline = time.monotonic() + duration_s
        killed = False
        while (rc := proc.poll()) is None:
            now = time.monotonic()
            if self.term_at is None:
                timeout = deadline - now
                if timeout <= 0:
                    self.reason = "overrun"
                    self._terminate()
                    continue
            elif not killed:
                timeout = self.term_at + self.grace - now
                if timeout <= 0:
                    signal_group(proc.pid, signal.SIGKILL)
                    killed = True
                    continue
            else:
                timeout = 1.0
            select.select([self._wake_r], [], [], timeout)
            try:
                while os.read(self._wake_r, 256):
                    pass
            except BlockingIOError:
                pass
        self.exit_reason = self.reason  # a signal after this does not change the outcome
        self._sweep(proc.pid)
        return rc

    def _sweep(self, pgid: int) -> None:
        """Stop whatever the script left behind in its group (and our session)."""
        if group_alive(pgid):
            signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + self.grace
            while group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            signal_group(pgid, signal.SIGKILL)
            self.job.note(f"run {self.jobndx}: stopped processes left in group {pgid}")
        if os.getsid(0) == os.getpid():
            me = os.getpid()
            for pid in session_members(me):
                if pid != me:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


def _outcome(reason: str | None, rc: int, duration_min: float) -> tuple[JobState, str]:
    if reason is not None and reason.startswith("signal"):
        return JobState.canceled, reason
    if reason == "overrun":
        return JobState.failed, f"duration {duration_min:g} min exceeded"
    if rc == 0:
        return JobState.completed, "exit 0"
    if rc < 0:
        return JobState.failed, f"signal {-rc}"
    return JobState.failed, f"exit {rc}"


def script_command(job: JobDir, spec: JobSpec, jobndx: int) -> list[str]:
    """Write the script into the job folder and return how to run it."""
    path = job.base / f"script.{jobndx}"
    path.write_text(spec.script)
    path.chmod(0o700)
    if spec.script.startswith("#!"):
        return [str(path)]
    return ["/bin/bash", str(path)]


def run_job(base: Path, jobndx: int, gate: int | None = None) -> int:
    job = JobDir(base)
    spec = job.spec()
    config = job.config()
    runner = _Runner(job, jobndx, config.kill_grace)
    runner.install()
    if gate is not None and not _wait_gate(gate):
        job.note(f"run {jobndx}: submission withdrawn before start")
        return 3
    backend = make_backend(config.backends[spec.backend], config.kill_grace)
    if config.service_callbacks:  # the service (which holds the identity) sends them
        return _run(job, spec, jobndx, runner, backend, config, lambda _job: None)
    # callbacks go out on a thread of their own: a slow receiver never delays the script
    callbacks = Dispatcher(sender_for(config), workers=1)
    try:
        return _run(job, spec, jobndx, runner, backend, config, callbacks.enqueue)
    finally:
        callbacks.close(timeout=2 * config.callback.worst_case() + 1.0)


def _run(
    job: JobDir,
    spec: JobSpec,
    jobndx: int,
    runner: _Runner,
    backend: Backend,
    config: Config,
    notify: Notify,
) -> int:
    info = f"host={socket.gethostname()} pid={os.getpid()}"
    try:
        announce(job, jobndx, JobState.active, info, config, notify)
    except IllegalTransition as exc:
        job.note(f"run {jobndx} not started: {exc}")
        return 3
    if runner.reason is not None:
        state, info, rc = JobState.canceled, runner.reason, 128 + signal.SIGTERM
    else:
        env = job_environment(spec, job, jobndx, backend.runtime_env(spec), dict(os.environ))
        cwd = job.workdir(spec)
        duration_s = spec.resources.duration * 60.0
        try:
            cwd.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            job.note(f"run {jobndx}: cannot create directory {cwd}: {exc}")
            state, info, rc = JobState.failed, f"cannot create directory {cwd}: {exc.strerror}", 1
        else:
            try:
                rc = runner.run(script_command(job, spec, jobndx), env, cwd, duration_s)
            except OSError as exc:
                job.note(f"run {jobndx}: cannot start script: {exc}")
                state, info, rc = JobState.failed, f"cannot start script: {exc.strerror}", 127
            else:
                state, info = _outcome(runner.exit_reason, rc, spec.resources.duration)
    # Refused when e.g. `psik cancel` already recorded `canceled` (noted in log/console).
    with contextlib.suppress(IllegalTransition):
        announce(job, jobndx, state, info, config, notify)
    return rc if rc >= 0 else 128 - rc


def create_job(prefix: Path, request: bytes) -> JobDir:
    """Write a job folder from `{spec, config, owner, delegated_by}` (JSON) as this user.

    The folder and the files psik-api must update (status, console, callback cursor) are
    group-writable: under a setgid prefix the group is the service's, so psik-api can record
    transitions while other users cannot enter the folder at all.
    """
    doc = json.loads(request)
    spec = JobSpec.model_validate(doc["spec"])
    config = Config.model_validate(doc["config"])
    os.umask(0o007)
    return JobStore(prefix).create(
        spec, config, owner=doc.get("owner"), delegated_by=doc.get("delegated_by")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m psik.wrapper", description=__doc__)
    parser.add_argument("base", type=Path, help="the job folder (the prefix with --create)")
    parser.add_argument("jobndx", type=int, nargs="?")
    parser.add_argument("--gate", type=int, default=None, help="fd to wait on for 'go'")
    parser.add_argument("--create", action="store_true", help="create a job from stdin")
    args = parser.parse_args(argv)
    try:
        if args.create:
            print(create_job(args.base, sys.stdin.buffer.read()).jobid)
            return 0
        if args.jobndx is None:
            parser.error("JOBNDX is required to run a job")
        return run_job(args.base.resolve(), args.jobndx, args.gate)
    except (ValueError, KeyError) as exc:
        print(f"psik.wrapper: bad job request: {exc}", file=sys.stderr)
        return 2
    except PsikError as exc:
        print(f"psik.wrapper: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
