"""Job operations: create, submit, cancel, restart, remove, and announcing transitions."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

from .backends import Backend, make_backend, parse_native
from .errors import BackendError, IllegalTransition, PsikError, SpecError
from .jobdir import JobDir, JobStore
from .models import Config, JobSpec, JobState, Transition
from .outbox import drain, sender_for
from .runas import folder_login, via_sudo

#: what to do once a row is recorded: deliver the job's pending callbacks (now or later).
Notify = Callable[[JobDir], None]


def deliver_now(config: Config) -> Notify:
    """Deliver pending callbacks in this thread (the CLI and the wrapper's last word)."""

    def notify(job: JobDir) -> None:
        sender = sender_for(config)
        try:
            drain(job, sender)
        finally:
            sender.close()

    return notify


def announce(
    job: JobDir,
    jobndx: int,
    state: JobState,
    info: str = "",
    config: Config | None = None,
    notify: Notify | None = None,
) -> Transition:
    """Record a transition, then have its callback delivered (if the spec asks for one).

    The row is written first; `notify` (default: deliver now, per the config's callback
    policy) sends it in order after any earlier pending ones. Delivery failures are
    recorded in the job (psik.outbox), never raised.
    """
    tr = job.record(jobndx, state, info)
    if job.spec().callback:
        (notify or deliver_now(config or job.config()))(job)
    return tr


class Psik:
    """The job manager for one Config: a job store plus its named backends.

    `notify` is how callbacks leave: by default at once, in the caller's thread;
    psik-api passes its Dispatcher's `enqueue` so no request waits on a receiver.
    With `sudo` (psik-api run_as caller), a job's folder is created, and its wrapper and
    scheduler commands run, as the job's user through sudo; without, as this process.
    """

    def __init__(
        self, config: Config, notify: Notify | None = None, sudo: str | None = None
    ) -> None:
        self.config = config
        self.store = JobStore(config.prefix)
        self.notify = notify or deliver_now(config)
        self.sudo = sudo

    def backend(self, name: str, job: JobDir | None = None) -> Backend:
        """The named backend, acting as `job`'s user when jobs run as their users."""
        try:
            cfg = self.config.backends[name]
        except KeyError:
            known = ", ".join(sorted(self.config.backends))
            raise SpecError(f"unknown backend {name!r} (configured: {known})") from None
        return make_backend(cfg, self.config.kill_grace, self._via(job))

    def _via(self, job: JobDir | None) -> list[str]:
        if self.sudo is None or job is None:
            return []
        login = folder_login(job.base)
        if login is None:
            raise BackendError(f"job {job.jobid}: its folder's owner has no login")
        return via_sudo(self.sudo, login)

    def create(
        self,
        spec: JobSpec,
        owner: str | None = None,
        delegated_by: str | None = None,
        login: str | None = None,
    ) -> JobDir:
        """Write the job folder (as `login`, through sudo, when given)."""
        self.backend(spec.backend)  # unknown backend: refuse before writing anything
        if login is None:
            return self.store.create(spec, self.config, owner=owner, delegated_by=delegated_by)
        return self._create_as(login, spec, owner, delegated_by)

    def _create_as(
        self, login: str, spec: JobSpec, owner: str | None, delegated_by: str | None
    ) -> JobDir:
        if self.sudo is None:
            raise BackendError("jobs cannot run as their users: no sudo configured")
        request = {
            "spec": spec.model_dump(mode="json"),
            "config": self.config.model_dump(mode="json"),
            "owner": owner,
            "delegated_by": delegated_by,
        }
        argv = [sys.executable, "-m", "psik.wrapper", "--create", str(self.store.prefix)]
        try:  # the spec (cb_secret included) goes on stdin, never on a command line
            out = subprocess.run(
                [*via_sudo(self.sudo, login), *argv],
                input=json.dumps(request).encode(),
                capture_output=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendError(f"cannot create the job as {login}: {exc}") from None
        if out.returncode != 0:
            detail = (out.stderr or out.stdout).decode(errors="replace").strip()
            raise BackendError(f"cannot create the job as {login}: {detail}")
        job = self.store.get(out.stdout.decode().strip())
        if folder_login(job.base) != login:
            raise BackendError(f"job {job.jobid} folder is not owned by {login}")
        return job

    def submit(self, job: JobDir) -> str:
        """Submit a job in state (1, new); return the scheduler's id."""
        cur = job.current()
        if cur.state is not JobState.new:
            raise IllegalTransition(f"job {job.jobid} is {cur.state.value}, not new")
        return self._submit(job, cur.jobndx)

    def run(self, spec: JobSpec, submit: bool = True, owner: str | None = None) -> JobDir:
        job = self.create(spec, owner=owner)
        if submit:
            self.submit(job)
        return job

    def restart(self, job: JobDir) -> str:
        """Resubmit a finished job as run jobndx + 1."""
        cur = job.current()
        if not cur.state.final:
            raise IllegalTransition(
                f"job {job.jobid} is {cur.state.value}; only a finished job can restart"
            )
        return self._submit(job, cur.jobndx + 1)

    def _submit(self, job: JobDir, jobndx: int) -> str:
        """Submit run `jobndx`; a scheduler's refusal is recorded as `failed` and raised."""
        spec = job.spec()
        cfg = self.config.backends.get(spec.backend)
        backend = self.backend(spec.backend, job)
        assert cfg is not None
        queued: Callable[[str], None] = lambda native: self._announce(  # noqa: E731
            job, jobndx, JobState.queued, f"{cfg.type}:{native}"
        )
        try:
            return backend.submit(job, jobndx, queued)
        except BackendError as exc:
            cur = job.current()  # a restart refused before `queued` leaves the last run as is
            if cur.jobndx == jobndx and not cur.state.final:
                self._announce(job, jobndx, JobState.failed, f"not submitted: {exc}")
            raise

    def _announce(self, job: JobDir, jobndx: int, state: JobState, info: str) -> Transition:
        return announce(job, jobndx, state, info, self.config, self.notify)

    def cancel(self, job: JobDir) -> Transition:
        """Record `canceled` and stop the run (waiting or running)."""
        cur = job.current()
        if cur.state not in (JobState.queued, JobState.active):
            raise IllegalTransition(f"job {job.jobid} is {cur.state.value}; nothing to cancel")
        native = self._native(job, cur.jobndx)
        spec = job.spec()
        tr = self._announce(job, cur.jobndx, JobState.canceled, "canceled on request")
        try:
            self.backend(spec.backend, job).cancel(job, native)
        except PsikError as exc:
            job.note(f"cancel of {native} failed: {exc}")
            raise
        return tr

    def reconcile(self, job: JobDir) -> Transition | None:
        """Record `failed` for a queued/active run whose scheduler job is gone without
        an outcome (wrapper killed, node lost); return that transition, if any."""
        cur = job.current()
        if cur.state not in (JobState.queued, JobState.active):
            return None
        native = self._native(job, cur.jobndx)
        reason = self.backend(job.spec().backend, job).vanished(job, native)
        if reason is None:
            return None
        if job.current() != cur:
            return None  # it recorded its outcome meanwhile
        try:
            return self._announce(job, cur.jobndx, JobState.failed, reason)
        except IllegalTransition:
            return None

    def remove(self, job: JobDir) -> None:
        cur = job.current()
        if cur.state in (JobState.queued, JobState.active):
            raise IllegalTransition(f"job {job.jobid} is {cur.state.value}; cancel it first")
        self.store.remove(job.jobid)

    @staticmethod
    def _native(job: JobDir, jobndx: int) -> str:
        for tr in reversed(job.transitions()):
            if tr.jobndx == jobndx and tr.state is JobState.queued:
                return parse_native(tr.info)[1]
        raise PsikError(f"job {job.jobid} run {jobndx} has no queued record")
