"""The transfer state machine on every edge, including duplicate, late and out-of-order
events (pure: no I/O)."""

from __future__ import annotations

import pytest

from lclstream_api.machine import step
from lclstream_api.models import (
    CancelJobs,
    CancelRequested,
    JobSeen,
    MetricsSeen,
    ProvisionFailed,
    ReleasePorts,
    Tick,
    Transfer,
    TransferOptions,
    TransferState,
)
from nngstream.models import Metrics

pytestmark = pytest.mark.timeout(30)
S = TransferState


def fresh(buffers: int = 1, **opts) -> Transfer:
    return Transfer(
        id="t1", owner="uid:a", created=0.0, updated=0.0,
        options=TransferOptions(buffers=buffers, producers=2, **opts),
        roles=["producer", *(f"buffer-{k}" for k in range(buffers))],
    )  # fmt: skip


def job(role: str, state: str, t: float = 1.0, source: str = "callback", info: str = ""):
    return JobSeen(role=role, jobid=f"j-{role}", state=state, info=info, source=source, time=t)


def run(t: Transfer, *events):
    actions = []
    for ev in events:
        t, acts = step(t, ev)
        actions.append(acts)
    return t, actions


def submitted(buffers: int = 1) -> Transfer:
    roles = ["producer", *(f"buffer-{k}" for k in range(buffers))]
    t, _ = run(fresh(buffers), *(job(r, "queued", source="service") for r in roles))
    return t


def streaming(buffers: int = 1) -> Transfer:
    roles = ["producer", *(f"buffer-{k}" for k in range(buffers))]
    t, _ = run(submitted(buffers), *(job(r, "active", 2.0) for r in roles))
    assert t.state is S.STREAMING
    return t


def test_happy_path_with_sources_in_the_log():
    t = streaming()
    t, acts = run(
        t, job("producer", "completed", 3.0), job("buffer-0", "completed", 4.0, "reconciler")
    )
    assert t.state is S.COMPLETED and t.reason == ""
    assert [(x.old, x.new, x.source) for x in t.transitions] == [
        (S.PROVISIONING, S.STREAMING, "callback"),
        (S.STREAMING, S.DRAINING, "callback"),
        (S.DRAINING, S.COMPLETED, "reconciler"),
    ]
    assert acts[-1] == [ReleasePorts()]  # nothing left to cancel


def test_streaming_needs_every_job_running():
    t, _ = run(submitted(2), job("producer", "active"), job("buffer-0", "active"))
    assert t.state is S.PROVISIONING
    t, _ = run(t, job("buffer-1", "active"))
    assert t.state is S.STREAMING


def test_buffers_done_before_producer_waits_for_producer():
    t, _ = run(streaming(2), job("buffer-0", "completed"), job("buffer-1", "completed"))
    assert t.state is S.STREAMING
    t, _ = run(t, job("producer", "completed"))
    assert t.state is S.COMPLETED


def test_duplicates_and_late_events_are_harmless():
    t = streaming()
    t, _ = run(t, job("producer", "completed"), job("producer", "completed"))
    assert t.state is S.DRAINING and len(t.transitions) == 2
    t, _ = run(t, job("producer", "active"), job("producer", "queued"))  # late: ignored
    assert t.jobs["producer"].state == "completed" and t.state is S.DRAINING
    t, acts = run(t, job("buffer-0", "completed"), job("buffer-0", "completed"))
    assert t.state is S.COMPLETED and acts[1] == []
    assert len(t.transitions) == 3


def test_out_of_order_completion_before_active_and_before_submission_record():
    t = fresh()
    # callbacks overtake the service's own record of the submissions
    t, _ = run(t, job("producer", "completed"), job("buffer-0", "completed"))
    assert t.state is S.COMPLETED
    t, _ = run(t, job("producer", "queued", source="service"))
    assert t.state is S.COMPLETED and t.jobs["producer"].state == "completed"


def test_a_failed_job_fails_the_transfer_and_cancels_the_others():
    t = streaming(2)
    t, acts = run(t, job("producer", "failed", info="exit 1: no such file /nope"))
    assert t.state is S.FAILED
    assert t.reason == "producer job j-producer failed: exit 1: no such file /nope"
    assert acts[0] == [
        CancelJobs(jobids=[], after_grace=["j-buffer-0", "j-buffer-1"]),
        ReleasePorts(),
    ]
    t2, acts = run(t, job("buffer-0", "canceled"), job("buffer-0", "completed"))
    assert t2.state is S.FAILED and t2.reason == t.reason and acts == [[], []]


def test_a_job_canceled_by_someone_else_fails_the_transfer():
    t, acts = run(streaming(), job("buffer-0", "canceled"))
    assert t.state is S.FAILED and "canceled outside the service" in t.reason
    assert acts[0] == [CancelJobs(jobids=["j-producer"], after_grace=[]), ReleasePorts()]


@pytest.mark.parametrize("state_of", ["provisioning", "streaming", "draining"])
def test_cancel_from_every_live_state_is_idempotent(state_of):
    t = {"provisioning": submitted(), "streaming": streaming()}.get(state_of)
    if t is None:
        t, _ = run(streaming(), job("producer", "completed"))
    t, acts = run(t, CancelRequested(time=9.0), CancelRequested(time=10.0))
    assert t.state is S.CANCELED and t.transitions[-1].source == "user"
    assert acts[0][-1] == ReleasePorts() and acts[1] == []
    cancel = acts[0][0]
    assert isinstance(cancel, CancelJobs)
    assert cancel.jobids == (["j-producer"] if state_of != "draining" else [])
    assert cancel.after_grace == ["j-buffer-0"]  # buffers end their stream themselves


def test_cancel_after_completion_changes_nothing():
    t, _ = run(streaming(), job("producer", "completed"), job("buffer-0", "completed"))
    t2, acts = run(t, CancelRequested(time=9.0))
    assert t2 == t and acts == [[]]


def test_provisioning_failure_compensates_what_was_started():
    t, _ = run(fresh(2), job("buffer-0", "queued", source="service"))
    t, acts = run(t, ProvisionFailed(reason="psik-api refused job: HTTP 400", time=2.0))
    assert t.state is S.FAILED and t.reason == "psik-api refused job: HTTP 400"
    assert acts[0] == [CancelJobs(jobids=[], after_grace=["j-buffer-0"]), ReleasePorts()]


def test_timers():
    t, acts = run(submitted(), Tick(time=100.0), Tick(time=301.0))
    assert acts[0] == [] and t.state is S.FAILED and "provisioning after 300" in t.reason
    assert t.transitions[-1].source == "timer"

    t = streaming()  # idle: no consumer since streaming began at t=2
    t, _ = run(t, Tick(time=500.0))
    assert t.state is S.STREAMING
    t, _ = run(t, Tick(time=603.0))
    assert t.state is S.FAILED and "no consumer connected for 600" in t.reason

    t, _ = run(streaming(), job("producer", "completed", 10.0), Tick(time=611.0))
    assert t.state is S.FAILED and "draining after 600" in t.reason


def metrics(consumers: int) -> Metrics:
    return Metrics(
        time=0, state="streaming", producers=2, consumers=consumers, recvd=0, sent=0, dropped=0,
        buffered=0, buffered_bytes=0, bytes_in=0, bytes_out=0, rate_in=0, rate_out=0,
    )  # fmt: skip


def test_a_consumer_resets_the_idle_timer_and_metrics_are_kept():
    t = streaming()
    t, _ = run(t, MetricsSeen(role="buffer-0", metrics=metrics(1), time=500.0), Tick(time=900.0))
    assert t.state is S.STREAMING and t.metrics["buffer-0"].consumers == 1
    t, _ = run(t, MetricsSeen(role="buffer-0", metrics=metrics(0), time=901.0), Tick(time=1502.0))
    assert t.state is S.FAILED


def test_unknown_role_is_ignored():
    t = streaming()
    t2, acts = run(t, job("buffer-7", "failed"))
    assert t2 == t and acts == [[]]
