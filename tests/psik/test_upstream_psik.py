"""Interoperation with upstream psik 3.1.1 from PyPI (its own virtualenv): its remote
`psik` backend drives our psik-api over mTLS, and JobSpecs its models write run here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from certified import Certified
from psik.jobdir import JobStore
from tests.support.receiver import Receiver
from tests.support.servers import start_psik_api
from tests.support.upstream import upstream_env, upstream_venv

from .conftest import REPO, JobReceiver
from .helpers import final_state, psik_cli, wait_until

pytestmark = pytest.mark.timeout(600)  # the first run installs upstream psik

UPSTREAM = ["psik==3.1.1", "certified[http]==1.3.0"]


@pytest.fixture(scope="module")
def up() -> Path:
    return upstream_venv("psik", UPSTREAM)


def theirs(up: Path, cwd: Path, *args, program: str = "psik", certified: Path | None = None):
    extra = {"CERTIFIED_CONFIG": str(certified)} if certified else {}
    out = subprocess.run([str(up / program), *map(str, args)], capture_output=True, text=True,
                         timeout=120, cwd=cwd, env=upstream_env(up, **extra))  # fmt: skip
    assert out.returncode == 0, f"upstream {program} {args}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def upstream_spec(up: Path, cwd: Path, **fields) -> dict:
    """A JobSpec as upstream psik's own models serialize it (model_dump(mode='json'))."""
    code = (
        "import json, sys; from psik.models import JobSpec;"
        " print(json.dumps(JobSpec.model_validate(json.loads(sys.argv[1]))"
        ".model_dump(mode='json')))"
    )
    return json.loads(theirs(up, cwd, "-c", code, json.dumps(fields), program="python"))


def test_upstream_psik_drives_our_psik_api(up, pki, spawn, tmp_path, request):
    """Upstream `psik` with a remote `psik` backend: submit, poll/list, cancel, callbacks."""
    # the upstream user: its own identity, trusted by psik-api through its signer document
    user = tmp_path / "upstream-user"
    theirs(up, tmp_path, "init", "upuser", "--email", "u@example.org", "--config", user,
           program="certified")  # fmt: skip
    signer = tmp_path / "user-signer.json"
    signer.write_text(theirs(up, tmp_path, "get-signer", "--config", user, program="certified"))
    subprocess.run(["certified", "add-client", "upuser", signer, "--config", pki.server],
                   check=True, timeout=60, capture_output=True)  # fmt: skip

    rx = Receiver(Certified(pki.server), secret="up-secret")  # trusts upuser (added above)
    request.addfinalizer(rx.close)
    rx_url = rx.base
    pki.add_service(pki.server, "receiver", rx_url)
    receiver = JobReceiver(rx, "https://receiver/callback", "up-secret")
    _api, url = start_psik_api(spawn, pki.server, tmp_path, env={"PYTHONPATH": str(REPO)},
                               psik={"callback": {"allowed": ["receiver"]}})  # fmt: skip
    store = JobStore(tmp_path / "jobs")

    ca = tmp_path / "api-signer.json"
    ca.write_text(subprocess.run(["certified", "get-signer", "--format", "upstream", "--config",
                                  str(pki.server)], capture_output=True, text=True, check=True,
                                 timeout=60).stdout)  # fmt: skip
    auth = theirs(up, tmp_path, "-c", "from certified import Certified; from certified.encode "
                  f"import rfc4514name; print(rfc4514name(Certified({str(user)!r}).signer()"
                  ".certificate.subject))", program="python").strip()  # fmt: skip
    theirs(up, tmp_path, "add-service", "127.0.0.1", ca, "--auth", auth, "--config", user,
           program="certified")  # fmt: skip
    # upstream psik also calls the callback itself (for the transitions it records, and it
    # must reach it to cancel): an upstream nickname file for the receiver, url with port
    b64 = json.loads(ca.read_text())["ca_cert"]
    (user / "known_servers" / "receiver.yaml").write_text(
        json.dumps({"url": rx_url, "cert": b64, "auths": [auth]})
    )

    prefix = tmp_path / "upstream-jobs"
    prefix.mkdir()
    cfg = tmp_path / "psik.json"
    cfg.write_text(
        json.dumps(
            {
                "prefix": str(prefix),
                "backends": {
                    "default": {
                        "type": "psik",
                        "attributes": {"remote_url": url, "remote_backend": "default"},
                    }
                },
            }
        )
    )
    # fmt: skip

    def upsik(*args: str) -> str:
        return theirs(up, tmp_path, *args, "--config", cfg, certified=user)

    # submit: a job that finishes
    spec = tmp_path / "done.json"
    spec.write_text(
        json.dumps(
            {
                "name": "machine info",
                "script": "#!/bin/sh\necho hi $jobndx\n",
                "callback": receiver.url,
                "cb_secret": "up-secret",
            }
        )
    )
    stamp = upsik("run", str(spec)).split()[-1]
    local = json.loads((prefix / stamp / "spec.json").read_text())
    rows = (prefix / stamp / "status.csv").read_text().splitlines()
    remote = rows[-1].split(",")[3]  # upstream records our job id as the queued info
    assert rows[-1].split(",")[2] == "queued" and remote.isdigit()
    ours = store.get(remote)
    assert ours.owner() == "cn:upuser" and ours.spec().name == local["name"] == "machine info"
    assert final_state(ours, 30) == "completed"
    got = receiver.wait_for(remote, "completed")
    assert [r["state"] for r in got] == ["queued", "active", "completed"]  # HMAC checked

    # poll, then list: upstream's job shows our states and logs
    upsik("poll", stamp)
    listing = upsik("ls")
    line = next(ln for ln in listing.splitlines() if ln.startswith(stamp))
    assert line.split()[1] == "completed"
    assert (prefix / stamp / "log" / "stdout.1").read_text() == "hi 1\n"

    # cancel a running job through upstream's `psik cancel`
    spec.write_text(
        json.dumps(
            {
                "name": "long",
                "script": "#!/bin/sh\nsleep 300\n",
                "callback": receiver.url,
                "cb_secret": "up-secret",
            }
        )
    )
    stamp = upsik("run", str(spec)).split()[-1]
    remote = (prefix / stamp / "status.csv").read_text().splitlines()[-1].split(",")[3]
    job = store.get(remote)
    wait_until(lambda: job.current().state.value == "active", 30, "the job to start")
    upsik("cancel", stamp)
    assert final_state(job, 30) == "canceled"
    assert receiver.wait_for(remote, "canceled")[-1]["state"] == "canceled"
    # upstream's own callbacks (its job ids) reached our receiver too, signed alike
    theirs_cb = [r for r in receiver.received() if r["jobid"] == stamp]
    assert theirs_cb and {r["identity"] for r in theirs_cb} == {"cn:upuser"}

    # a JobSpec serialized by upstream's models, POSTed to our native route
    doc = upstream_spec(up, tmp_path, name="paper job", script="echo $SLURM_NTASKS-$RANKS",
                        environment={"RANKS": "2"}, callback=receiver.url,
                        cb_secret="up-secret", resources={"node_count": 1,
                                                          "processes_per_node": 2})  # fmt: skip
    pki.add_service(pki.client, "psik", url)
    with Certified(pki.client).client("https://psik", timeout=30) as client:
        resp = client.post("/jobs", json=doc)
    assert resp.status_code == 201, resp.text
    job = store.get(resp.json()["jobid"])
    assert final_state(job, 30) == "completed"
    res = job.spec().resources
    assert (res.node_count, res.processes_per_node, res.process_count) == (1, 2, 2)
    assert job.log_path("stdout", 1).read_text() == "-2\n"
    assert receiver.wait_for(job.jobid, "completed")[-1]["identity"] == "cn:server"


def test_upstream_jobspec_runs_here_with_the_same_meaning(up, tmp_path, psik_config, receiver):
    doc = upstream_spec(
        up,
        tmp_path,
        name="machine info",
        script="#!/bin/sh\necho ranks=$RANKS\n",
        environment={"RANKS": "2"},
        resources={"node_count": 1, "processes_per_node": 2, "duration": 1},
        callback=receiver.url,
        cb_secret=receiver.secret,
        cb_headers={"X-Test-Tag": "upstream-spec"},
    )
    assert doc["resources"]["process_count"] is None and doc["cb_secret"] == receiver.secret
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(doc))
    out = psik_cli("run", str(path), config=psik_config)
    assert out.returncode == 0, out.stderr
    jobid = out.stdout.strip()
    rows = receiver.wait_for(jobid, "completed")
    assert {r["tag"] for r in rows} == {"upstream-spec"}
    job = JobStore(tmp_path / "jobs").get(jobid)
    spec = job.spec()
    res = spec.resources
    assert (res.node_count, res.processes_per_node, res.process_count) == (1, 2, 2)
    assert res.exclusive_node_use is True and res.duration == 1  # upstream's explicit value
    assert spec.name == "machine info" and spec.directory is None
    assert job.log_path("stdout", 1).read_text() == "ranks=2\n"
