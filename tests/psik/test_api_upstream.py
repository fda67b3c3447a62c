"""psik-api's /v3 routes (what upstream psik 3's remote `psik` backend calls), over mTLS."""

from __future__ import annotations

import pytest

from .helpers import final_state, wait_until
from .test_api import api  # noqa: F401  (module-scoped psik-api fixture)

pytestmark = pytest.mark.timeout(90)

#: a JobSpec as upstream psik's remote backend forwards it (model_dump(mode="json")).
UPSTREAM = {
    "name": "machine info",
    "directory": None,
    "script": "#!/bin/sh\necho hello from $jobndx\n",
    "environment": {},
    "inherit_environment": True,
    "resources": {
        "duration": 1,
        "node_count": None,
        "process_count": None,
        "processes_per_node": None,
        "cpu_cores_per_process": 1,
        "gpu_cores_per_process": 0,
        "exclusive_node_use": True,
    },
    "backend": "default",
    "attributes": {},
    "callback": None,
    "cb_headers": {},
    "cb_secret": None,
}


def test_submit_history_logs_and_callbacks(api):  # noqa: F811
    spec = {
        **UPSTREAM,
        "callback": api.receiver.url,
        "cb_secret": api.receiver.secret,
        "cb_headers": {"X-Test-Tag": "from-upstream"},
    }
    resp = api.owner.post("/v3/jobs", json=spec, params={"submit": "true"})
    assert resp.status_code == 201, resp.text
    jobid = resp.json()
    assert isinstance(jobid, str) and jobid.isdigit()
    job = api.store.get(jobid)
    assert final_state(job, 30) == "completed"
    rows = api.receiver.wait_for(jobid, "completed")
    assert [r["state"] for r in rows] == ["queued", "active", "completed"]
    assert {r["tag"] for r in rows} == {"from-upstream"}  # cb_headers honoured

    steps = api.owner.get(f"/v3/jobs/{jobid}").json()
    assert [(s["jobndx"], s["state"]) for s in steps] == [
        (0, "new"),
        (1, "queued"),
        (1, "active"),
        (1, "completed"),
    ]
    assert all(isinstance(s["updated"], float) for s in steps)
    logs = api.owner.get(f"/v3/jobs/{jobid}/logs").json()
    assert logs["stdout.1"] == "hello from 1\n" and logs["stderr.1"] == ""
    assert "console" in logs
    assert job.spec().name == "machine info" and job.spec().resources.process_count == 1
    shown = api.owner.get(f"/jobs/{jobid}").json()["spec"]
    assert shown["cb_headers"] == {"X-Test-Tag": "(hidden)"} and shown["cb_secret"] is None


def test_create_without_submit_then_start(api):  # noqa: F811
    resp = api.owner.post("/v3/jobs", json=UPSTREAM, params={"submit": "false"})
    assert resp.status_code == 201, resp.text
    jobid = resp.json()
    assert [s["state"] for s in api.owner.get(f"/v3/jobs/{jobid}").json()] == ["new"]
    assert api.owner.post(f"/v3/jobs/{jobid}/start").status_code == 200
    assert final_state(api.store.get(jobid), 30) == "completed"
    again = api.owner.post(f"/v3/jobs/{jobid}/start")
    assert again.status_code == 409 and "not new" in again.json()["detail"]


def test_cancel_and_ownership(api):  # noqa: F811
    spec = {**UPSTREAM, "script": "echo started\nsleep 300\n", "resources": {"duration": 5}}
    jobid = api.owner.post("/v3/jobs", json=spec).json()
    job = api.store.get(jobid)
    wait_until(lambda: job.current().state.value == "active", 30, "the job to start")
    for path in (f"/v3/jobs/{jobid}", f"/v3/jobs/{jobid}/logs"):
        assert api.other.get(path).status_code == 404  # another identity sees nothing
    assert api.other.delete(f"/v3/jobs/{jobid}").status_code == 404
    resp = api.owner.delete(f"/v3/jobs/{jobid}")
    assert resp.status_code == 200, resp.text
    assert resp.json()[-1]["state"] == "canceled"
    assert final_state(job, 30) == "canceled"
    assert api.owner.delete(f"/v3/jobs/{jobid}").status_code == 409


def test_bad_upstream_specs_are_422_naming_the_field(api):  # noqa: F811
    bad = {**UPSTREAM, "resources": {"node_count": 1, "processes_per_node": 2, "process_count": 3}}
    resp = api.owner.post("/v3/jobs", json=bad)
    assert resp.status_code == 422
    detail = resp.json()["detail"][0]
    assert detail["loc"] == ["body", "resources"]
    assert "process_count 3 contradicts node_count 1 x processes_per_node 2" in detail["msg"]
    resp = api.owner.post("/v3/jobs", json={**UPSTREAM, "backend": "nope"})
    assert resp.status_code == 422 and "unknown backend 'nope'" in resp.text
