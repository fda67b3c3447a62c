"""Least privilege (run_as: caller): psik-api runs as an unprivileged account and starts
each job as the UNIX user who asked for it, through the sudoers rule `psik-api sudoers`
prints. Real users (useradd), real sudo, real psik-api over mTLS; the attacks a job once
could make (reading the service's key, another user's secret, signalling another user's
job) are run as jobs and must fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from certified import Certified
from tests.support.pki import Pki, make_pki
from tests.support.procs import Proc, ProcessSupervisor
from tests.support.receiver import Receiver
from tests.support.servers import start_psik_api
from tests.support.slurm import slurm_cluster_in
from tests.support.users import require_user_admin, shared_python, sudoers_rule, unix_users
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(240)

TAG = f"pk{os.getpid() % 100000}"
SVC, ALICE, BOB, LOW, GHOST = (f"{TAG}{n}" for n in ("svc", "alice", "bob", "low", "ghost"))
DELEGATOR = "lclstream-api"
SECRET = "alice-callback-secret"
BOB_SECRET = "bob-very-private-secret"


@dataclass
class Deployment:
    root: Path
    prefix: Path
    pki: Pki
    uids: dict[str, int]
    proc: Proc
    receiver: Receiver
    clients: dict[str, httpx.Client]  # by login or identity name


def _kill_user_processes(uids: list[int]) -> None:
    for proc in psutil.process_iter():
        try:
            if proc.uids().real in uids:
                proc.kill()
        except psutil.Error:
            continue


@pytest.fixture(scope="module")
def dep() -> Iterator[Deployment]:
    require_user_admin()
    root = Path(tempfile.mkdtemp(prefix="psik-privilege-", dir="/tmp"))
    root.chmod(0o755)  # the service and the users reach their files through it
    try:
        with unix_users(SVC, ALICE, BOB, system=(LOW,)) as users:
            uids = {login: pw.pw_uid for login, pw in users.items()}
            try:
                yield from _deploy(root, users, uids)
            finally:
                _kill_user_processes(list(uids.values()))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _deploy(root: Path, users: dict, uids: dict[str, int]) -> Iterator[Deployment]:
    pki = make_pki(root / "pki")
    idents = {name: pki.new_user(name) for name in (ALICE, BOB, LOW, GHOST, "root")}
    idents[DELEGATOR] = pki.new_identity(DELEGATOR)
    idents["other"] = pki.other
    rx = Receiver(Certified(pki.server), secret=SECRET)
    pki.add_service(pki.server, "receiver", rx.base)  # psik-api calls back as cn:server
    svc = users[SVC]
    for path in [pki.server, *pki.server.rglob("*")]:  # the service's identity is its own
        os.chown(path, svc.pw_uid, svc.pw_gid)
    prefix = root / "jobs"
    prefix.mkdir()
    os.chown(prefix, svc.pw_uid, svc.pw_gid)
    python = shared_python(root)  # psik-api and the jobs' wrapper run with it
    rule = subprocess.run(
        [python, "-m", "psik.api.cli", "sudoers", "--user", SVC],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (root / "logs").mkdir()
    sup = ProcessSupervisor(root / "logs")
    psik = {
        "kill_grace": 1.0,
        "backends": {"default": {"type": "local"}, "slurm": {"type": "slurm"}},
        "callback": {"first_delay": 0.1, "max_delay": 0.5, "give_up_after": 5, "timeout": 3,
                     "allowed": ["receiver"]},
    }  # fmt: skip
    settings = {"run_as": "caller", "delegators": [f"cn:{DELEGATOR}"], "reconcile_interval": 0.3}
    with sudoers_rule(f"psik-test-{TAG}", rule):
        proc, url = start_psik_api(
            sup, pki.server, root, psik=psik, settings=settings, as_user=SVC, python=python,
            env={"HOME": str(root), "SLURM_CONF": str(root / "slurm" / "slurm.conf")},
        )  # fmt: skip
        clients = {}
        for name, d in idents.items():
            pki.add_service(d, "psik", url)
            clients[name] = Certified(d).client("https://psik", timeout=60)
        try:
            yield Deployment(root, prefix, pki, uids, proc, rx, clients)
        finally:
            for c in clients.values():
                c.close()
            proc.stop(grace=20)
            sup.stop_all()
            rx.close()


def submit(dep: Deployment, who: str, script: str, **extra) -> str:
    resp = dep.clients[who].post("/jobs", json={"script": script, **extra.pop("spec", {})}, **extra)
    assert resp.status_code == 201, resp.text
    return resp.json()["jobid"]


def wait_state(dep: Deployment, who: str, jobid: str, *states: str) -> dict:
    def state() -> dict | None:
        body = dep.clients[who].get(f"/jobs/{jobid}").json()
        return body if body["state"] in states else None

    return wait_until(state, 120, f"job {jobid} to be {'/'.join(states)}")


def stdout(dep: Deployment, who: str, jobid: str) -> str:
    resp = dep.clients[who].get(f"/jobs/{jobid}/logs/stdout")
    assert resp.status_code == 200, resp.text
    return resp.text


def test_jobs_run_as_the_caller(dep):
    """alice's job runs with alice's uid, bob's with bob's; folders are theirs and closed
    to others; the service still delivers signed callbacks of the wrapper's rows."""
    spec = {"callback": "https://receiver/callback", "cb_secret": SECRET}
    a = submit(dep, ALICE, "id -u; id -un", spec=spec)
    b = submit(dep, BOB, "id -u; id -un")
    body = wait_state(dep, ALICE, a, "completed", "failed")
    assert body["state"] == "completed", body
    assert body["run_as"] == ALICE and body["delegated_by"] is None
    assert stdout(dep, ALICE, a).split() == [str(dep.uids[ALICE]), ALICE]
    assert wait_state(dep, BOB, b, "completed", "failed")["state"] == "completed"
    assert stdout(dep, BOB, b).split() == [str(dep.uids[BOB]), BOB]
    for login, jobid in ((ALICE, a), (BOB, b)):
        st = (dep.prefix / jobid).stat()
        assert st.st_uid == dep.uids[login]
        assert st.st_mode & 0o007 == 0, oct(st.st_mode)  # nothing for other users
    assert dep.prefix.stat().st_mode & 0o7777 == 0o3733  # users create, nobody lists
    # callbacks: sent by psik-api (cn:server), signed, every state
    seen = wait_until(
        lambda: (
            (rows := [r for r in dep.receiver.accepted() if f'"jobid":"{a}"' in r["body"].decode()])
            and any(b'"completed"' in r["body"] for r in rows)
            and rows
        ),
        60,
        "completed callback",
    )
    assert {r["identity"] for r in seen} == {"cn:server"}
    # each sees only their own job
    assert dep.clients[BOB].get(f"/jobs/{a}").status_code == 404
    assert dep.clients[BOB].get(f"/jobs/{a}/logs/stdout").status_code == 404
    assert [j["jobid"] for j in dep.clients[BOB].get("/jobs").json()["jobs"]] == [b]


ATTACK = """\
try() {{ if eval "$2" >/dev/null 2>&1; then echo "BREACH $1"; else echo "refused $1"; fi; }}
try service-key "cat {pki}/server/id.key"
try service-ca-key "cat {pki}/server/CA.key"
try bob-folder "ls {bob}"
try bob-spec "cat {bob}/spec.json"
try bob-status "cat {bob}/status.csv"
try bob-log "cat {bob}/log/stdout.1"
try list-jobs "ls {prefix}"
try journal "cat {prefix}/.journal"
for pid in {pids}; do try "signal-$pid" "kill -TERM $pid"; done
"""


def test_a_job_cannot_attack_the_service_or_another_user(dep):
    """The attacks that once worked (a job printing the service's key, reading another
    user's cb_secret, killing another user's job) are refused by the kernel now."""
    b = submit(
        dep, BOB, "echo bob-is-running; sleep 120",
        spec={"callback": "https://receiver/callback", "cb_secret": BOB_SECRET},
    )  # fmt: skip
    wait_state(dep, BOB, b, "active")
    bob_base = dep.prefix / b
    wait_until(lambda: (bob_base / "log" / "stdout.1").stat().st_size > 0, 60, "bob's output")
    pids = []  # bob's wrapper, his script, and the sudo psik-api started it through
    for proc in psutil.process_iter(["cmdline"]):
        if str(bob_base) in " ".join(proc.info["cmdline"] or []) or _env_base(proc) == str(
            bob_base
        ):
            pids.append(proc.pid)
    assert len(pids) >= 2, pids
    script = ATTACK.format(
        pki=dep.pki.root, bob=bob_base, prefix=dep.prefix, pids=" ".join(map(str, pids))
    )
    a = submit(dep, ALICE, script)
    assert wait_state(dep, ALICE, a, "completed", "failed")["state"] == "completed"
    out = stdout(dep, ALICE, a)
    assert "BREACH" not in out, out
    assert out.count("refused") == 8 + len(pids), out
    assert BOB_SECRET not in out
    # bob's job never noticed; bob (and only bob) can still cancel it
    assert dep.clients[BOB].get(f"/jobs/{b}").json()["state"] == "active"
    assert dep.clients[ALICE].delete(f"/jobs/{b}").status_code == 404
    assert dep.clients[BOB].delete(f"/jobs/{b}").status_code == 200
    body = wait_state(dep, BOB, b, "canceled")
    wait_until(lambda: not _alive(pids), 60, "bob's job processes to end after cancel")
    assert body["transitions"][-1]["info"] == "canceled on request"


def _env_base(proc: psutil.Process) -> str | None:
    try:
        return proc.environ().get("base")
    except psutil.Error:
        return None


def _alive(pids: list[int]) -> bool:
    return any(
        psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids
    )


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        ("root", "deny list"),
        (GHOST, "no UNIX login"),
        (LOW, "below the minimum 1000"),
        ("other", "not a user"),
    ],
)
def test_refused_identities_get_403(dep, who, reason):
    resp = dep.clients[who].post("/jobs", json={"script": "id -u"})
    assert resp.status_code == 403, resp.text
    assert reason in resp.json()["detail"]
    # the upstream-compatible route applies the same rule
    assert dep.clients[who].post("/v3/jobs", json={"script": "id -u"}).status_code == 403


def test_delegation_runs_as_the_named_user(dep):
    """cn:lclstream-api (a delegator) submits for alice: alice owns it, it runs as alice,
    and it records who delegated; nobody else may name a user."""
    header = {"X-On-Behalf-Of": f"uid:{ALICE}"}
    jobid = submit(dep, DELEGATOR, "id -u", headers=header)
    body = wait_state(dep, ALICE, jobid, "completed", "failed")
    assert body["state"] == "completed"
    assert body["delegated_by"] == f"cn:{DELEGATOR}" and body["run_as"] == ALICE
    assert stdout(dep, ALICE, jobid).split() == [str(dep.uids[ALICE])]
    assert jobid in [j["jobid"] for j in dep.clients[ALICE].get("/jobs").json()["jobs"]]
    # the delegator follows what it submitted (not alice's other jobs); others do not
    assert dep.clients[DELEGATOR].get(f"/jobs/{jobid}").json()["delegated_by"] == f"cn:{DELEGATOR}"
    assert dep.clients[DELEGATOR].get("/jobs").json()["total"] == 0
    assert dep.clients["other"].get(f"/jobs/{jobid}").status_code == 404
    own = submit(dep, ALICE, "true")
    assert dep.clients[DELEGATOR].get(f"/jobs/{own}").status_code == 404
    # ... and may cancel it, through sudo as alice
    long = submit(dep, DELEGATOR, "sleep 300", headers=header)
    wait_state(dep, ALICE, long, "active")
    assert dep.clients[DELEGATOR].delete(f"/jobs/{long}").status_code == 200
    assert wait_state(dep, ALICE, long, "canceled")["run_as"] == ALICE
    # a delegator cannot name root or a non-user
    for target in ("uid:root", "cn:other"):
        resp = dep.clients[DELEGATOR].post(
            "/jobs", json={"script": "id"}, headers={"X-On-Behalf-Of": target}
        )
        assert resp.status_code == 403, resp.text
    # anyone else naming a user: 403
    for who in ("other", BOB):
        resp = dep.clients[who].post("/jobs", json={"script": "id"}, headers=header)
        assert resp.status_code == 403, resp.text
        assert "not a delegator" in resp.json()["detail"]


@pytest.fixture(scope="module")
def user_cluster(dep) -> Iterator[Path]:
    """A single-node SLURM cluster whose configuration the users and psik-api can read
    (psik-api was started with SLURM_CONF pointing at it)."""
    folder = dep.root / "slurm"
    with slurm_cluster_in(folder):
        yield folder


def _native(body: dict) -> str:
    return next(t["info"] for t in body["transitions"] if t["state"] == "queued").split(":")[1]


def test_slurm_jobs_are_submitted_as_the_user(dep, user_cluster):
    """On the SLURM backend the job is the user's: `id -u` inside the allocation is
    alice's, SLURM records her as the job's user, and she can cancel it (scancel as her)."""
    env = {**os.environ, "SLURM_CONF": str(user_cluster / "slurm.conf")}
    spec = {"backend": "slurm", "resources": {"duration": 2}}
    a = submit(dep, ALICE, 'id -u; id -un; echo "slurm=$SLURM_JOB_ID"', spec=spec)
    body = wait_state(dep, ALICE, a, "completed", "failed")
    assert body["state"] == "completed", body
    native = _native(body)
    assert stdout(dep, ALICE, a).split() == [str(dep.uids[ALICE]), ALICE, f"slurm={native}"]
    show = subprocess.run(
        ["scontrol", "-o", "show", "job", native], capture_output=True, text=True, env=env
    ).stdout
    assert f"UserId={ALICE}({dep.uids[ALICE]})" in show, show
    # cancel goes through scancel as alice
    b = submit(dep, ALICE, "sleep 300", spec=spec)
    wait_state(dep, ALICE, b, "active")
    assert dep.clients[ALICE].delete(f"/jobs/{b}").status_code == 200
    native_b = _native(dep.clients[ALICE].get(f"/jobs/{b}").json())

    def gone() -> bool:
        out = subprocess.run(
            ["scontrol", "-o", "show", "job", native_b], capture_output=True, text=True, env=env
        ).stdout
        return "JobState=CANCELLED" in out or "JobState=COMPLETED" in out

    wait_until(gone, 60, f"SLURM job {native_b} to end")


def test_files_a_user_made_private_are_403_not_500(dep):
    """A job's user may hide files even from psik-api: the files API says so (403)."""
    script = "echo shared > open.txt; echo mine > private.txt; chmod 600 private.txt; "
    script += "mkdir hidden; chmod 700 hidden"
    jobid = submit(dep, ALICE, script)
    assert wait_state(dep, ALICE, jobid, "completed", "failed")["state"] == "completed"
    client = dep.clients[ALICE]
    assert client.get(f"/jobs/{jobid}/files/open.txt").text == "shared\n"
    for path in ("private.txt", "hidden"):
        resp = client.get(f"/jobs/{jobid}/files/{path}")
        assert resp.status_code == 403, resp.text
        assert "not readable by psik-api" in resp.json()["detail"]


def test_restart_runs_as_the_user_again(dep):
    jobid = submit(dep, BOB, "id -u")
    assert wait_state(dep, BOB, jobid, "completed", "failed")["state"] == "completed"
    assert dep.clients[BOB].post(f"/jobs/{jobid}/restart").status_code == 200
    body = wait_until(
        lambda: (
            (b := dep.clients[BOB].get(f"/jobs/{jobid}").json())["jobndx"] == 2
            and b["state"] in ("completed", "failed")
            and b
        ),
        120,
        "run 2",
    )
    assert body["state"] == "completed"
    run2 = dep.clients[BOB].get(f"/jobs/{jobid}/logs/stdout", params={"jobndx": 2}).text
    assert run2.split() == [str(dep.uids[BOB])]
