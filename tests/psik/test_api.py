"""psik-api over real mTLS: a `psik-api serve` process, clients `cn:client` and `cn:other`."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import Api, running_api
from .helpers import final_state, job_processes, wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    root = tmp_path_factory.mktemp("psik-api")
    psik_cfg = {
        "kill_grace": 1.0,
        "callback": {
            "first_delay": 0.1,
            "max_delay": 0.5,
            "give_up_after": 2,
            "timeout": 2,
            "allowed": ["receiver"],
        },
        "backends": {
            "default": {"type": "local"},
            "batch": {"type": "slurm", "queue_name": "secret-queue", "project_name": "acct"},
        },
    }
    with running_api(root, psik_cfg) as api:
        yield api
        left = job_processes(root / "jobs")
    assert left == [], f"orphaned job processes: {left}"
    access = api.proc.stderr_path.read_text() + api.proc.stdout_path.read_text()
    assert api.exit_code == 0 and "Application shutdown complete" in access, access[-500:]
    assert '"client_identity": "cn:client"' in access  # JSON access log names the caller


def post_job(api: Api, spec: dict) -> dict:
    resp = api.owner.post("/jobs", json=spec)
    assert resp.status_code == 201, resp.text
    return resp.json()


def follow_log(api: Api, jobid: str, stream: str = "stdout", jobndx: int | None = None) -> bytes:
    """Tail a log by offset until the run is final and nothing more arrives."""
    data, offset = b"", 0
    params = {} if jobndx is None else {"jobndx": jobndx}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        resp = api.owner.get(f"/jobs/{jobid}/logs/{stream}", params={**params, "offset": offset})
        assert resp.status_code == 200, resp.text
        assert int(resp.headers["x-psik-next-offset"]) == offset + len(resp.content)
        data += resp.content
        offset += len(resp.content)
        state = resp.headers["x-psik-state"]
        if not resp.content and state in ("completed", "failed", "canceled", "final"):
            return data
        if not resp.content:
            time.sleep(0.1)
    raise AssertionError(f"log of {jobid} did not end")


def test_create_list_get_tail_restart(api):
    script = 'for i in 1 2 3; do echo "run $jobndx line $i"; sleep 0.2; done\n'
    spec = {
        "name": "tail",
        "script": script,
        "callback": api.receiver.url,
        "cb_secret": "api-secret",
    }
    created = post_job(api, spec)
    jobid = created["jobid"]
    assert created["state"] in ("queued", "active", "completed") and created["jobndx"] == 1

    out = follow_log(api, jobid)
    assert out == b"".join(b"run 1 line %d\n" % i for i in (1, 2, 3))
    assert api.owner.get(f"/jobs/{jobid}/logs/stdout", params={"offset": 6}).content == out[6:]
    job = api.store.get(jobid)
    assert final_state(job, 30) == "completed"

    listing = api.owner.get("/jobs").json()
    assert jobid in [j["jobid"] for j in listing["jobs"]]
    done = api.owner.get("/jobs", params={"state": "completed", "limit": 1000}).json()
    assert jobid in [j["jobid"] for j in done["jobs"]]
    failed = api.owner.get("/jobs", params={"state": "failed"}).json()
    assert jobid not in [j["jobid"] for j in failed["jobs"]]
    page = api.owner.get("/jobs", params={"limit": 1, "offset": 0}).json()
    assert len(page["jobs"]) == 1 and page["total"] >= 1

    detail = api.owner.get(f"/jobs/{jobid}").json()
    assert detail["spec"]["script"] == script and detail["spec"]["cb_secret"] is None
    assert [t["state"] for t in detail["transitions"]] == ["new", "queued", "active", "completed"]

    rows = api.receiver.wait_for(jobid, "completed")
    assert [r["state"] for r in rows] == ["queued", "active", "completed"]
    assert {r["identity"] for r in rows} == {"cn:server"}

    resp = api.owner.post(f"/jobs/{jobid}/restart")
    assert resp.status_code == 200 and resp.json()["jobndx"] == 2
    assert follow_log(api, jobid, jobndx=2) == b"".join(b"run 2 line %d\n" % i for i in (1, 2, 3))
    assert final_state(job, 30) == "completed"
    assert api.owner.get(f"/jobs/{jobid}/logs/stdout", params={"jobndx": 1}).content == out
    assert b"psik" not in api.owner.get(f"/jobs/{jobid}/logs/stderr").content


def test_cancel_and_conflicts(api):
    jobid = post_job(api, {"script": "echo up\nsleep 300\n"})["jobid"]
    job = api.store.get(jobid)
    wait_until(lambda: job.current().state.value == "active", 30, "job to start")
    wait_until(lambda: b"up" in follow_once(api, jobid), 30, "job output")
    resp = api.owner.delete(f"/jobs/{jobid}")
    assert resp.status_code == 200 and resp.json()["state"] == "canceled"
    assert final_state(job, 30) == "canceled"
    assert job_processes(job.base) == []
    again = api.owner.delete(f"/jobs/{jobid}")
    assert again.status_code == 409 and "nothing to cancel" in again.json()["detail"]
    running = post_job(api, {"script": "sleep 300"})["jobid"]
    wait_until(lambda: api.store.get(running).current().state.value == "active", 30, "start")
    resp = api.owner.post(f"/jobs/{running}/restart")
    assert resp.status_code == 409 and "only a finished job" in resp.json()["detail"]
    assert api.owner.delete(f"/jobs/{running}").status_code == 200
    final_state(api.store.get(running), 30)


def follow_once(api: Api, jobid: str) -> bytes:
    return api.owner.get(f"/jobs/{jobid}/logs/stdout").content


def test_another_identity_sees_nothing(api):
    jobid = post_job(api, {"script": "echo secret > out.txt\nsleep 300\n"})["jobid"]
    job = api.store.get(jobid)
    wait_until(lambda: job.current().state.value == "active", 30, "job to start")
    for method, path in (
        ("GET", f"/jobs/{jobid}"),
        ("DELETE", f"/jobs/{jobid}"),
        ("POST", f"/jobs/{jobid}/restart"),
        ("GET", f"/jobs/{jobid}/logs/stdout"),
        ("GET", f"/jobs/{jobid}/files/out.txt"),
        ("GET", f"/jobs/{jobid}/files"),
    ):
        resp = api.other.request(method, path)
        assert resp.status_code == 404, (method, path, resp.status_code)
    assert jobid not in [j["jobid"] for j in api.other.get("/jobs").json()["jobs"]]
    assert job.current().state.value == "active"  # the attempt to cancel did nothing
    assert api.owner.delete(f"/jobs/{jobid}").status_code == 200
    final_state(job, 30)


ESCAPES = """\
echo data > out.txt
mkdir -p sub && echo nested > sub/a.txt
ln -s /etc/passwd leak
ln -s .. up
ln -s sub/a.txt inside
echo done
"""


def test_files_refuse_traversal_and_symlink_escape(api):
    jobid = post_job(api, {"script": ESCAPES})["jobid"]
    job = api.store.get(jobid)
    assert final_state(job, 30) == "completed"
    get = api.owner.get
    assert get(f"/jobs/{jobid}/files/out.txt").content == b"data\n"
    assert get(f"/jobs/{jobid}/files/sub/a.txt").content == b"nested\n"
    assert get(f"/jobs/{jobid}/files/inside").content == b"nested\n"  # a symlink that stays in
    names = {e["name"]: e["type"] for e in get(f"/jobs/{jobid}/files").json()}
    assert names == {
        "out.txt": "file",
        "sub": "directory",
        "leak": "symlink",
        "up": "symlink",
        "inside": "symlink",
    }
    assert [e["name"] for e in get(f"/jobs/{jobid}/files/sub").json()] == ["a.txt"]
    for path, code in (
        ("leak", 404),  # symlink to /etc/passwd
        ("up/spec.json", 404),  # symlink to the job folder above work/
        ("up/status.csv", 404),
        ("nope.txt", 404),
        ("..%2fspec.json", 400),
        ("%2e%2e/spec.json", 400),
        ("sub/..%2f..%2fspec.json", 400),
        ("%2fetc%2fpasswd", 400),
    ):
        resp = api.owner.get(httpx.URL(f"{api.url}/jobs/{jobid}/files/{path}"))
        assert resp.status_code == code, (path, resp.status_code, resp.text)
        assert b"root:" not in resp.content and b"jobndx" not in resp.content
    # a literal ../ is normalized away by the client: it must not reach another job's files
    resp = api.owner.get(f"/jobs/{jobid}/files/../../{jobid}/spec.json")
    assert resp.status_code == 404


def test_directory_cannot_widen_what_the_files_api_serves(api):
    victim = post_job(api, {"script": "echo secret > s.txt"})["jobid"]
    assert final_state(api.store.get(victim), 30) == "completed"
    for bad in (f"../../{victim}/work", "~", "a/../../b"):
        resp = api.other.post("/jobs", json={"script": "true", "directory": bad})
        assert resp.status_code == 422, (bad, resp.text)
        assert resp.json()["detail"][0]["loc"] == ["body", "directory"]
    # An absolute working directory is allowed, but the files API still serves work/ only.
    jobid = api.other.post("/jobs", json={"script": "true", "directory": "/"}).json()["jobid"]
    listing = {e["name"] for e in api.other.get(f"/jobs/{jobid}/files").json()}
    assert "etc" not in listing and "root" not in listing
    assert api.other.get(f"/jobs/{jobid}/files/etc/passwd").status_code == 404


def test_log_swapped_for_a_symlink_is_not_followed(api):
    script = 'echo hi; ln -sf /etc/passwd "$base/log/stderr.$jobndx"'
    jobid = post_job(api, {"script": script})["jobid"]
    assert final_state(api.store.get(jobid), 30) == "completed"
    resp = api.owner.get(f"/jobs/{jobid}/logs/stderr")
    assert resp.status_code == 404 and b"root:" not in resp.content
    assert api.owner.get(f"/jobs/{jobid}/logs/stdout").content == b"hi\n"


def test_malformed_jobspecs_get_422_naming_the_field(api):
    cases = [
        ({"script": "x", "resources": {"duration": "soon"}}, ["body", "resources", "duration"]),
        ({"script": "x", "colour": "red"}, ["body", "colour"]),
        ({"name": "x"}, ["body", "script"]),
        ({"script": "x", "attributes": {"partition": "big"}}, ["body", "attributes"]),
        ({"script": "x", "backend": "nope"}, ["body", "backend"]),
        ({"script": "x", "backend": "../etc"}, ["body", "backend"]),
    ]
    before = len(api.store.list())
    for spec, loc in cases:
        resp = api.owner.post("/jobs", json=spec)
        assert resp.status_code == 422, (spec, resp.text)
        assert loc in [err["loc"] for err in resp.json()["detail"]], (spec, resp.json())
    resp = api.owner.post(
        "/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert resp.status_code == 422
    assert len(api.store.list()) == before  # nothing was created


def test_unknown_ids_and_streams(api):
    assert api.owner.get("/jobs/12345").status_code == 404
    assert api.owner.get("/jobs/not-a-number").status_code == 404
    assert api.owner.delete("/jobs/12345").status_code == 404
    assert api.owner.get("/jobs", params={"state": "bogus"}).status_code == 422
    jobid = post_job(api, {"script": "true"})["jobid"]
    final_state(api.store.get(jobid), 30)
    assert api.owner.get(f"/jobs/{jobid}/logs/passwd").status_code == 422


def test_backends_show_names_and_types_only(api):
    resp = api.owner.get("/backends")
    assert sorted(resp.json(), key=lambda b: b["name"]) == [
        {"name": "batch", "type": "slurm"},
        {"name": "default", "type": "local"},
    ]
    assert "secret-queue" not in resp.text and "acct" not in resp.text
