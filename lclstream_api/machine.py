"""The transfer state machine: a pure function `(record, event) -> (record', actions)`.

provisioning -> streaming (every job active) -> draining (producer completed) ->
completed (producer and every buffer completed); failed (a job failed, was canceled by
someone else, provisioning failed, a timer ran out) and canceled (the user) from any live
state. Job states only move forward, so duplicate, late and out-of-order events are
harmless; nothing changes a finished transfer except the jobs' own records.
"""

from __future__ import annotations

from .models import (
    JOB_RANK,
    Action,
    CancelJobs,
    CancelRequested,
    Event,
    JobRef,
    JobSeen,
    MetricsSeen,
    ProvisionFailed,
    ReleasePorts,
    Tick,
    Transfer,
    TransferState,
    Transition,
)

S = TransferState


def step(t: Transfer, ev: Event) -> tuple[Transfer, list[Action]]:
    """The record after `ev` and what the service must do about it."""
    t = t.model_copy(deep=True)
    if isinstance(ev, JobSeen):
        _job(t, ev)
    elif isinstance(ev, MetricsSeen):
        last = t.metrics.get(ev.role)
        if last is None or ev.metrics.time >= last.time:  # a late report changes nothing
            t.metrics[ev.role] = ev.metrics
        if t.state.live:
            _idle(t, ev.time)
    if not t.state.live:
        return t, []
    if isinstance(ev, CancelRequested):
        return _finish(t, S.CANCELED, ev.source, "canceled by the user", ev.time)
    if isinstance(ev, ProvisionFailed):
        return _finish(t, S.FAILED, ev.source, ev.reason, ev.time)
    if isinstance(ev, Tick):
        return _timers(t, ev)
    return _advance(t, ev.source, ev.time)


def _job(t: Transfer, ev: JobSeen) -> None:
    if ev.role not in t.roles:
        return
    cur = t.jobs.get(ev.role)
    if cur is None or cur.jobid == ev.jobid and JOB_RANK[ev.state] > JOB_RANK[cur.state]:
        t.jobs[ev.role] = JobRef(jobid=ev.jobid, state=ev.state, info=ev.info)


def _idle(t: Transfer, now: float) -> None:
    buffers = [m for r, m in t.metrics.items() if r.startswith("buffer")]
    if any(m.consumers for m in buffers):
        t.idle_since = None
    elif t.idle_since is None:
        t.idle_since = now


def _advance(t: Transfer, source: str, now: float) -> tuple[Transfer, list[Action]]:
    for role, job in t.jobs.items():
        if job.state == "failed":
            why = f"{role} job {job.jobid} failed" + (f": {job.info}" if job.info else "")
            return _finish(t, S.FAILED, source, why, now)
        if job.state == "canceled":
            why = f"{role} job {job.jobid} was canceled outside the service"
            return _finish(t, S.FAILED, source, why, now)
    states = {r: (t.jobs[r].state if r in t.jobs else "new") for r in t.roles}
    buffers = [s for r, s in states.items() if r != "producer"]
    if states["producer"] == "completed":
        if all(s == "completed" for s in buffers):
            return _finish(t, S.COMPLETED, source, "", now)
        if t.state is not S.DRAINING:
            _move(t, S.DRAINING, source, "the producer job completed", now)
            t.draining_since = now
        return t, []
    if t.state is S.PROVISIONING and all(
        JOB_RANK[s] >= JOB_RANK["active"] for s in states.values()
    ):
        _move(t, S.STREAMING, source, "every job is running", now)
        t.idle_since = now
    return t, []


def _timers(t: Transfer, ev: Tick) -> tuple[Transfer, list[Action]]:
    o = t.options
    if t.state is S.PROVISIONING and ev.time - t.created > o.provisioning_timeout:
        why = f"still provisioning after {o.provisioning_timeout:g} s"
        return _finish(t, S.FAILED, ev.source, why, ev.time)
    idle = t.idle_since if t.state is S.STREAMING else None
    if idle is not None and ev.time - idle > o.idle_timeout:
        why = f"no consumer connected for {o.idle_timeout:g} s"
        return _finish(t, S.FAILED, ev.source, why, ev.time)
    draining = t.draining_since if t.state is S.DRAINING else None
    if draining is not None and ev.time - draining > o.draining_timeout:
        why = f"buffers still draining after {o.draining_timeout:g} s"
        return _finish(t, S.FAILED, ev.source, why, ev.time)
    return t, []


def _move(t: Transfer, new: S, source: str, reason: str, now: float) -> None:
    t.transitions.append(Transition(time=now, old=t.state, new=new, source=source, reason=reason))
    t.state = new
    t.updated = now


def _finish(
    t: Transfer, new: S, source: str, reason: str, now: float
) -> tuple[Transfer, list[Action]]:
    _move(t, new, source, reason, now)
    t.reason = reason
    live = {r: j.jobid for r, j in t.jobs.items() if JOB_RANK[j.state] < JOB_RANK["completed"]}
    now_ = [jid for r, jid in live.items() if r == "producer"]
    later = [jid for r, jid in live.items() if r != "producer"]
    actions: list[Action] = [CancelJobs(jobids=now_, after_grace=later)] if live else []
    return t, [*actions, ReleasePorts()]
