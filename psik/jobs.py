"""Job operations: create, submit, cancel, restart, remove, and announcing transitions."""

from __future__ import annotations

from collections.abc import Callable

from .backends import Backend, make_backend, parse_native
from .errors import BackendError, IllegalTransition, PsikError, SpecError
from .jobdir import JobDir, JobStore
from .models import Config, JobSpec, JobState, Transition
from .outbox import drain, sender_for

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
    """

    def __init__(self, config: Config, notify: Notify | None = None) -> None:
        self.config = config
        self.store = JobStore(config.prefix)
        self.notify = notify or deliver_now(config)

    def backend(self, name: str) -> Backend:
        try:
            cfg = self.config.backends[name]
        except KeyError:
            known = ", ".join(sorted(self.config.backends))
            raise SpecError(f"unknown backend {name!r} (configured: {known})") from None
        return make_backend(cfg, self.config.kill_grace)

    def create(self, spec: JobSpec, owner: str | None = None) -> JobDir:
        self.backend(spec.backend)  # unknown backend: refuse before writing anything
        return self.store.create(spec, self.config, owner=owner)

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
        backend = self.backend(spec.backend)
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
            self.backend(spec.backend).cancel(job, native)
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
        reason = self.backend(job.spec().backend).vanished(job, native)
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
