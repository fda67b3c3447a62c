"""Job operations: create, submit, cancel, restart, remove, and announcing transitions."""

from __future__ import annotations

from collections.abc import Callable

from .backends import Backend, make_backend, parse_native
from .callbacks import deliver
from .errors import IllegalTransition, PsikError, SpecError
from .jobdir import JobDir, JobStore
from .models import Callback, Config, JobSpec, JobState, Transition


def announce(
    job: JobDir, jobndx: int, state: JobState, info: str = "", config: Config | None = None
) -> Transition:
    """Record a transition, then deliver its callback (if the spec asks for one).

    The row is written first; delivery is retried per the config's callback policy and a
    delivery failure is noted in log/console, never raised.
    """
    tr = job.record(jobndx, state, info)
    spec = job.spec()
    if spec.callback:
        cfg = config or job.config()
        cb = Callback(jobid=job.jobid, jobndx=jobndx, state=state, info=info)
        deliver(
            spec.callback,
            cb,
            spec.cb_secret,
            cfg.callback,
            certified=cfg.certified,
            log=job.note,
            extra_headers=spec.cb_headers,
        )
    return tr


class Psik:
    """The job manager for one Config: a job store plus its named backends."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = JobStore(config.prefix)

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
        spec = job.spec()
        cfg = self.config.backends.get(spec.backend)
        backend = self.backend(spec.backend)
        assert cfg is not None
        queued: Callable[[str], None] = lambda native: announce(  # noqa: E731
            job, jobndx, JobState.queued, f"{cfg.type}:{native}", self.config
        )
        return backend.submit(job, jobndx, queued)

    def cancel(self, job: JobDir) -> Transition:
        """Record `canceled` and stop the run (waiting or running)."""
        cur = job.current()
        if cur.state not in (JobState.queued, JobState.active):
            raise IllegalTransition(f"job {job.jobid} is {cur.state.value}; nothing to cancel")
        native = self._native(job, cur.jobndx)
        spec = job.spec()
        tr = announce(job, cur.jobndx, JobState.canceled, "canceled on request", self.config)
        try:
            self.backend(spec.backend).cancel(job, native)
        except PsikError as exc:
            job.note(f"cancel of {native} failed: {exc}")
            raise
        return tr

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
