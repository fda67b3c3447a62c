"""psik-api's GET /metrics: real `psik-api serve` over mTLS, real jobs, callbacks to a real
dead port (nothing listens on it: every attempt is refused)."""

from __future__ import annotations

import pytest

from tests.support.metrics import scrape
from tests.support.ports import free_port

from .conftest import running_api
from .helpers import wait_until

pytestmark = pytest.mark.timeout(180)

#: three attempts over 0.3 s, then the callback is given up and recorded.
POLICY = {"timeout": 2, "first_delay": 0.1, "max_delay": 0.1, "give_up_after": 0.3}


@pytest.fixture(scope="module")
def dead():
    """A port nothing listens on (connections are refused)."""
    return free_port()


@pytest.fixture(scope="module")
def api(tmp_path_factory, dead):
    root = tmp_path_factory.mktemp("psik-api-metrics")
    psik_cfg = {
        "kill_grace": 1.0,
        "service_callbacks": True,  # every callback goes through psik-api's workers
        "callback": {**POLICY, "allowed": [f"https://127.0.0.1:{dead}/"]},
    }
    settings = {"reconcile_interval": 0.5, "metrics_readers": ["cn:other"]}
    with running_api(root, psik_cfg, settings) as api:
        yield api
    assert api.exit_code == 0, api.proc.stderr()[-2000:]


def test_metrics_need_a_listed_reader(api):
    resp = api.owner.get("/metrics")  # cn:client is not in metrics_readers
    assert resp.status_code == 403
    assert "cn:client may not read metrics" in resp.json()["detail"]
    assert "/metrics" not in api.owner.get("/openapi.json").json()["paths"]


def test_jobs_by_state_and_failed_callbacks_to_a_dead_port(api, dead):
    before = scrape(api.other)
    assert {k for k in before if k.startswith("psik_jobs{")} == {
        f'psik_jobs{{state="{s}"}}'
        for s in ("new", "queued", "active", "completed", "failed", "canceled")
    }
    assert before["psik_callback_failures_total"] == 0
    spec = {"script": "sleep 1", "callback": f"https://127.0.0.1:{dead}/cb", "cb_secret": "x"}
    jobids = []
    for _ in range(3):
        resp = api.owner.post("/jobs", json=spec)
        assert resp.status_code == 201, resp.text
        jobids.append(resp.json()["jobid"])

    # the three jobs share one destination: one worker retries it, the others wait
    seen = []

    def queued() -> bool:
        m = scrape(api.other)
        seen.append(m)
        waiting = m["psik_callback_queue_jobs"] + m["psik_callback_busy_destinations"]
        return waiting > 0

    wait_until(queued, 60, "callbacks waiting for the dead port")
    assert seen[-1]["psik_callback_busy_destinations"] <= 1  # one worker per destination

    # queued, active and completed of each job: all given up, counted and recorded
    def settled() -> dict | None:
        m = scrape(api.other)
        done = m['psik_jobs{state="completed"}'] - before['psik_jobs{state="completed"}']
        return m if done == 3 and m["psik_callback_failures_total"] == 9 else None

    after = wait_until(settled, 90, "9 given-up callbacks of 3 completed jobs")
    assert after["psik_callback_queue_jobs"] == 0
    assert after["psik_callbacks_delivered_total"] == before["psik_callbacks_delivered_total"]
    for jobid in jobids:
        failed = api.owner.get(f"/jobs/{jobid}").json()["callbacks"]["failed"]
        assert [f["state"] for f in failed] == ["queued", "active", "completed"]
