"""psik-api under faults: dead receivers, unlisted destinations, killed wrappers, hostile
numbers, thousands of jobs. Real `psik-api serve` over mTLS, real job processes."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import psutil
import pytest

from psik.backends import parse_native
from psik.jobdir import format_row
from psik.models import Config, JobSpec, JobState, Transition
from tests.support.receiver import BlackHole

from .conftest import running_api
from .helpers import final_state, job_processes, psik_cli, wait_until

pytestmark = pytest.mark.timeout(180)

SECRET = "faults-secret"
#: one 5 s attempt per callback: long enough that a POST waiting on one would show.
POLICY = {"timeout": 5, "first_delay": 0.1, "max_delay": 0.1, "give_up_after": 0}


@pytest.fixture(scope="module")
def hole():
    hole = BlackHole()
    yield hole
    hole.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory, hole):
    root = tmp_path_factory.mktemp("psik-api-faults")
    allowed = ["receiver", f"https://127.0.0.1:{hole.port}/"]
    psik_cfg = {"kill_grace": 1.0, "callback": {**POLICY, "allowed": allowed}}
    settings = {"reconcile_interval": 0.5, "callback_workers": 4}
    with running_api(root, psik_cfg, settings, secret=SECRET) as api:
        yield api
        hole.close()  # refused from now on: wrappers give up at once and exit
        wait_until(lambda: not job_processes(root / "jobs"), 60, "job processes to exit")
    assert api.exit_code == 0, api.proc.stderr()[-2000:]


def post(client: httpx.Client, spec: dict) -> httpx.Response:
    return client.post("/jobs", json=spec)


def test_black_hole_callbacks_never_hold_a_request(api, hole):
    """POST /jobs returns while its queued callback sits in a receiver that never
    answers, and 50 such jobs leave another user's GET /jobs answering."""
    spec = {"script": "true", "callback": hole.url, "cb_secret": "x"}
    start = time.monotonic()
    resp = post(api.owner, spec)
    took = time.monotonic() - start
    assert resp.status_code == 201, resp.text
    jobid = resp.json()["jobid"]
    # The queued callback cannot have been delivered (nothing ever answers), so a POST
    # that waited for it would have taken at least the 5 s attempt.
    assert took < POLICY["timeout"], took
    print(f"POST /jobs with a black-hole callback: {took * 1000:.0f} ms")
    detail = api.owner.get(f"/jobs/{jobid}").json()
    assert detail["callbacks"]["pending"] >= 1

    posted = []
    owner, other = api.fresh_client(api.pki.client), api.fresh_client(api.pki.other)
    with owner, other, ThreadPoolExecutor(10) as pool:
        posts = [pool.submit(post, owner, spec) for _ in range(50)]
        # meanwhile another user lists their jobs, again and again
        lists = [pool.submit(other.get, "/jobs", params={"limit": 10}) for _ in range(50)]
        for fut in posts:
            r = fut.result()
            assert r.status_code == 201, r.text
            posted.append(r.json()["jobid"])
        bad = [(r.status_code, r.text[:300]) for r in (f.result() for f in lists)]
        assert all(code == 200 for code, _ in bad), [b for b in bad if b[0] != 200]
    start = time.monotonic()
    assert api.other.get("/jobs").status_code == 200
    print(f"GET /jobs by another user with 51 black-hole jobs: {time.monotonic() - start:.3f} s")
    for jobid in [detail["jobid"], *posted]:
        final_state(api.store.get(jobid), 90)
    # each job's callbacks end up given up and recorded in the job, never lost
    first = api.store.get(detail["jobid"])
    wait_until(
        lambda: api.owner.get(f"/jobs/{first.jobid}").json()["callbacks"]["pending"] == 0,
        120,
        "the first job's callbacks to be given up",
    )
    failed = api.owner.get(f"/jobs/{first.jobid}").json()["callbacks"]["failed"]
    assert [f["state"] for f in failed] == ["queued", "active", "completed"]
    assert all("Timeout" in f["reason"] for f in failed), failed


def test_callback_to_an_unlisted_destination_is_refused_at_submit(api, hole):
    before = len(api.store.list())
    for url in (
        "https://evil.example/cb",
        f"https://127.0.0.1:{hole.port + 1}/cb",
        "https://receiver.example/callback",
        "http://receiver/callback",
    ):
        resp = post(api.owner, {"script": "true", "callback": url, "cb_secret": "s"})
        assert resp.status_code == 422, (url, resp.text)
        err = resp.json()["detail"][0]
        assert err["loc"] == ["body", "callback"] and "not allowed" in err["msg"], err
    assert len(api.store.list()) == before


def test_killed_wrapper_fails_the_job_with_callback_and_no_orphan(api):
    spec = {"script": "echo up; sleep 600", "callback": api.receiver.url, "cb_secret": SECRET}
    jobid = post(api.owner, spec).json()["jobid"]
    job = api.store.get(jobid)
    api.receiver.wait_for(jobid, "active", 30)
    wait_until(lambda: job.log_path("stdout", 1).read_bytes() == b"up\n", 30, "the script")
    queued = next(t for t in job.transitions() if t.state.value == "queued")
    wrapper = int(parse_native(queued.info)[1])
    running = job_processes(job.base)
    assert running, "the script should be running"
    for proc in [psutil.Process(wrapper), *running]:  # the key is on no command line
        assert all(SECRET not in part for part in proc.cmdline())
        assert SECRET not in "".join(proc.environ().values())
    os.kill(wrapper, signal.SIGKILL)
    rows = api.receiver.wait_for(jobid, "failed", timeout=30)
    assert [r["state"] for r in rows] == ["queued", "active", "failed"]
    assert f"wrapper (pid {wrapper}) vanished" in rows[-1]["info"]
    assert "it left running" in rows[-1]["info"]  # the orphaned script and its `sleep 600`
    assert job_processes(job.base) == []
    assert job.current().state.value == "failed"


def test_uncreatable_directory_fails_the_job_with_a_reason(api):
    spec = {"script": "true", "directory": "/proc/x", "callback": api.receiver.url,
            "cb_secret": SECRET}  # fmt: skip
    jobid = post(api.owner, spec).json()["jobid"]
    rows = api.receiver.wait_for(jobid, "failed", timeout=30)
    assert [r["state"] for r in rows] == ["queued", "active", "failed"]
    assert "cannot create directory /proc/x" in rows[-1]["info"]
    final_state(api.store.get(jobid), 30)


RES = ["body", "resources"]


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (b'{"script": "x", "resources": {"duration": NaN}}', [*RES, "duration"]),
        (b'{"script": "x", "resources": {"duration": 1e400}}', [*RES, "duration"]),
        (b'{"script": "x", "resources": {"duration": -Infinity}}', [*RES, "duration"]),
        (b'{"script": "x", "resources": {"node_count": 1e400}}', [*RES, "node_count"]),
        (b'{"script": "x", "inherit_environment": "yes"}', ["body", "inherit_environment"]),
        (b'{"script": "x", "resources": {"exclusive_node_use": 1}}', [*RES, "exclusive_node_use"]),
    ],
)
def test_hostile_numbers_and_loose_booleans_are_422(api, raw, loc):
    resp = api.owner.post("/jobs", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert loc in [e["loc"] for e in resp.json()["detail"]]


def test_log_offsets_beyond_the_file_or_int64(api):
    jobid = post(api.owner, {"script": "echo hello"}).json()["jobid"]
    final_state(api.store.get(jobid), 30)
    get = api.owner.get
    url = f"/jobs/{jobid}/logs/stdout"
    assert get(url, params={"offset": 6}).status_code == 200  # at the end: empty, fine
    assert get(url, params={"offset": 7}).status_code == 416
    assert get(url, params={"offset": 2**63 - 1}).status_code == 416
    for bad in (2**63, 2**64, 10**30, -1, "1e3", "NaN"):
        assert get(url, params={"offset": bad}).status_code == 422, bad
    assert get(url, params={"jobndx": 2}).status_code == 404
    assert get(url, params={"jobndx": 2**70}).status_code == 422
    assert get("/jobs", params={"limit": 2**64}).status_code == 422
    assert get("/jobs", params={"offset": 2**63}).status_code == 422


def test_openapi_declares_the_error_statuses(api):
    doc = api.owner.get("/openapi.json").json()
    paths = doc["paths"]
    assert {"404"} <= set(paths["/jobs/{jobid}"]["get"]["responses"])
    assert {"404", "409", "502"} <= set(paths["/jobs/{jobid}"]["delete"]["responses"])
    assert {"404", "416"} <= set(paths["/jobs/{jobid}/logs/{stream}"]["get"]["responses"])
    assert {"400", "404"} <= set(paths["/jobs/{jobid}/files/{path}"]["get"]["responses"])
    assert {"400", "422", "502"} <= set(paths["/jobs"]["post"]["responses"])


def test_listing_5000_jobs_by_page(api):
    """5000 jobs of one owner (written as folders, the source of truth): pages, totals and
    state filters are right, 50 concurrent clients get answers, and jobs created or
    removed behind the service's back show up through the journal."""
    owner = "cn:client"
    cfg = Config(prefix=api.store.prefix)
    made = [api.store.create(JobSpec(script="true", name=f"bulk{i}"), cfg, owner=owner)
            for i in range(5000)]  # fmt: skip
    mine = api.owner.get("/jobs", params={"limit": 1000}).json()["total"]
    assert mine >= 5000
    page = api.owner.get("/jobs", params={"state": "new", "limit": 10, "offset": 100}).json()
    news = [
        j.jobid for j in api.store.list() if j.owner() == owner and j.current().state.value == "new"
    ]
    assert page["total"] == len(news)
    assert [j["jobid"] for j in page["jobs"]] == news[100:110]
    assert api.other.get("/jobs", params={"state": "new"}).json()["total"] == 0

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: api.owner.get("/jobs", params={"limit": 10}), range(50)))
    assert all(a.status_code == 200 and len(a.json()["jobs"]) == 10 for a in answers)

    gone = made[0].jobid
    config = api.root / "psik-cli.yaml"
    config.write_text(json.dumps({"prefix": str(api.store.prefix)}))
    assert psik_cli("rm", gone, config=config).returncode == 0
    after = api.owner.get("/jobs", params={"state": "new", "limit": 1}).json()
    assert after["total"] == len(news) - 1 and after["jobs"][0]["jobid"] != gone
    for job in made[1:]:
        api.store.remove(job.jobid)
    assert api.owner.get("/jobs", params={"state": "new"}).json()["total"] == len(news) - 5000


def test_a_lost_journal_line_does_not_leave_a_stale_state(api):
    """On a shared file system a journal append can be lost: the reconciler rereads
    every unfinished job from its folder, so the listing still catches up."""
    cfg = Config(prefix=api.store.prefix)
    job = api.store.create(JobSpec(script="true", name="lost"), cfg, owner="cn:client")

    def listed(state: str) -> bool:
        page = api.owner.get("/jobs", params={"state": state, "limit": 1000}).json()
        return job.jobid in [j["jobid"] for j in page["jobs"]]

    wait_until(lambda: listed("new"), 30, "the new job to be listed")
    # a row written where the journal append was lost (status.csv only)
    row = Transition(time=datetime.now(UTC), jobndx=1, state=JobState.failed, info="elsewhere")
    with open(job.status_path, "a") as fh:
        fh.write(format_row(row))
    wait_until(lambda: listed("failed"), 30, "the listing to show the job failed")
    api.store.remove(job.jobid)
