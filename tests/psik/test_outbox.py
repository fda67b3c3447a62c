"""The callback outbox: in order and exactly once whoever drains, failures recorded, and a
dead receiver holding one dispatcher worker, not the pool. Real receivers on loopback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from certified.webhooks import RetryPolicy, WebhookSender
from psik.jobdir import JobDir, JobStore
from psik.models import CallbackPolicy, Config, JobSpec, JobState
from psik.outbox import Dispatcher, drain, failed, pending
from tests.support.receiver import BlackHole, Receiver

from .conftest import REPO
from .helpers import wait_until

pytestmark = pytest.mark.timeout(60)

FAST = CallbackPolicy(timeout=2, first_delay=0.05, max_delay=0.1, give_up_after=0.2)


def make_job(tmp_path, url: str, secret: str = "k", allowed: list[str] | None = None) -> JobDir:
    cfg = Config(prefix=tmp_path / "jobs", callback=FAST.model_copy(update={"allowed": allowed}))
    return JobStore(cfg.prefix).create(JobSpec(script="true", callback=url, cb_secret=secret), cfg)


def record_run(job: JobDir) -> None:
    job.record(1, JobState.queued, "local:1")
    job.record(1, JobState.active, "host=h pid=1")
    job.record(1, JobState.completed, "exit 0")


DRAIN = """
import sys
from psik.jobdir import JobDir
from psik.outbox import drain, sender_for
job = JobDir(sys.argv[1])
sys.stdin.read()  # start together
drain(job, sender_for(job.config()))
"""


def test_racing_drainers_deliver_each_row_once_in_order(tmp_path):
    rx = Receiver(secret="k")
    try:
        job = make_job(tmp_path, rx.url)
        record_run(job)
        assert pending(job) == 3
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", DRAIN, str(job.base)],
                stdin=subprocess.PIPE,
                env={"PYTHONPATH": str(REPO)},
            )
            for _ in range(4)
        ]
        for p in procs:
            p.stdin.close()  # go
        assert [p.wait(30) for p in procs] == [0, 0, 0, 0]
        assert [b["state"] for b in rx.bodies()] == ["queued", "active", "completed"]
        assert len(rx.requests) == 3  # exactly once each
        assert pending(job) == 0 and failed(job) == []
    finally:
        rx.close()


def test_undeliverable_callbacks_are_recorded_and_passed(tmp_path):
    rx = Receiver(secret="k")
    try:
        job = make_job(tmp_path, rx.url, allowed=["https://elsewhere.example/"])
        record_run(job)
        drain(job, WebhookSender(FAST, None, job.config().callback.allowed))
        assert rx.requests == []  # never contacted
        assert [(f.state, f.attempts) for f in failed(job)] == [
            (JobState.queued, 0), (JobState.active, 0), (JobState.completed, 0)
        ]  # fmt: skip
        assert all("not allowed" in f.reason for f in failed(job))
        assert pending(job) == 0
        assert "not sent: destination not allowed" in job.console.read_text()
    finally:
        rx.close()


def test_a_dead_receiver_holds_one_worker_not_the_pool(tmp_path):
    hole, rx = BlackHole(), Receiver(secret="k")
    slow = RetryPolicy(timeout=20, first_delay=0.1, max_delay=0.1, give_up_after=0)
    dispatcher = Dispatcher(WebhookSender(slow), workers=2)
    try:
        dead = [make_job(tmp_path / f"d{i}", hole.url.replace("https", "http")) for i in range(3)]
        live = make_job(tmp_path / "live", rx.url)
        for job in [*dead, live]:
            job.record(1, JobState.queued, "local:1")
            dispatcher.enqueue(job)
        # the live job is answered while every dead one still waits on the black hole
        wait_until(lambda: rx.bodies(), 15, "the live receiver's callback")
        assert [pending(job) for job in dead] == [1, 1, 1]
        wait_until(lambda: hole.held, 15, "a worker to reach the black hole")
        assert len(hole.held) == 1  # one connection: one worker spent on that destination
    finally:
        hole.close()  # the stuck attempt fails now; the others fail fast
        dispatcher.close(timeout=30)
        rx.close()
    assert [len(failed(job)) for job in dead] == [1, 1, 1]
