"""The local backend end to end: real jobs, real process groups, callbacks over mTLS."""

from __future__ import annotations

import os
import signal

import pytest
import yaml

from psik.jobdir import JobStore
from psik.signing import sign

from .conftest import write_config
from .helpers import final_state, job_processes, psik_cli, states, wait_until

pytestmark = pytest.mark.timeout(90)


def submit(tmp_path, config, spec: dict, *args: str) -> tuple[str, JobStore]:
    path = tmp_path / f"spec-{len(list(tmp_path.glob('spec-*')))}.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = psik_cli("run", str(path), *args, config=config)
    assert out.returncode == 0, out.stderr
    prefix = yaml.safe_load(config.read_text())["prefix"]
    return out.stdout.strip(), JobStore(prefix)


RANKS = (
    "import sys; from mpi4py import MPI; c = MPI.COMM_WORLD; "
    "sys.stdout.write(f'rank {c.rank} of {c.size}\\n')"  # one write: no interleaving
)
MPI_SCRIPT = """\
echo "jobid=$jobid jobndx=$jobndx base=$base nodes=$nodes mpirun=$mpirun pwd=$(pwd)"
echo "X=$X FOO=${FOO:-unset}"
"$mpirun" -n 2 python -c "$RANKS"
echo to-stderr >&2
"""


def test_job_runs_and_callbacks_arrive_in_order_signed(tmp_path, psik_config, receiver):
    spec = {
        "name": "mpi",
        "script": MPI_SCRIPT,
        "environment": {"X": "from-spec", "RANKS": RANKS},
        "callback": "https://receiver/cb",  # a certified nickname, resolved and pinned
        "cb_secret": receiver.secret,
    }
    jobid, store = submit(tmp_path, psik_config, spec)
    job = store.get(jobid)
    rows = receiver.wait_for(jobid, "completed")
    assert final_state(job, 60) == "completed"
    assert [(r["jobndx"], r["state"]) for r in rows] == [
        (1, "queued"),
        (1, "active"),
        (1, "completed"),
    ]
    assert all(r["identity"] == "cn:client" for r in rows)  # sent over mTLS as the client
    assert rows[0]["info"].startswith("local:") and rows[2]["info"] == "exit 0"
    assert states(job) == [(1, "new"), (1, "queued"), (1, "active"), (1, "completed")]
    out = job.log_path("stdout", 1).read_text()
    assert f"jobid={jobid} jobndx=1 base={job.base} nodes=1 mpirun=" in out
    assert f"pwd={job.base / 'work'}" in out
    assert "X=from-spec FOO=unset" in out
    assert "rank 0 of 2" in out and "rank 1 of 2" in out
    assert job.log_path("stderr", 1).read_text() == "to-stderr\n"


def test_environment_inherited_or_not(tmp_path, psik_config):
    script = 'echo "FOO=${FOO:-unset} jobid=$jobid"'
    os.environ["FOO"] = "parent"
    try:
        inherit, store = submit(tmp_path, psik_config, {"script": script})
        clean, _ = submit(tmp_path, psik_config, {"script": script, "inherit_environment": False})
    finally:
        del os.environ["FOO"]
    for jobid, expect in ((inherit, "FOO=parent"), (clean, "FOO=unset")):
        job = store.get(jobid)
        assert final_state(job, 60) == "completed"
        assert job.log_path("stdout", 1).read_text() == f"{expect} jobid={jobid}\n"


def test_failing_script_reports_its_exit_code(tmp_path, psik_config, receiver):
    spec = {"script": "echo partial\nexit 7\n", "callback": receiver.url, "cb_secret": "s"}
    spec["cb_secret"] = receiver.secret
    jobid, store = submit(tmp_path, psik_config, spec)
    rows = receiver.wait_for(jobid, "failed")
    assert [r["state"] for r in rows] == ["queued", "active", "failed"]
    assert rows[-1]["info"] == "exit 7"
    job = store.get(jobid)
    assert final_state(job, 30) == "failed"
    assert job.current().info == "exit 7"


TREE = """\
sleep 300 &
( sleep 301 & wait ) &
bash -c "trap '' TERM; sleep 302" &
echo ready
wait
"""


def test_cancel_kills_the_whole_group_and_records_canceled(tmp_path, psik_config, receiver):
    spec = {"script": TREE, "callback": receiver.url, "cb_secret": receiver.secret}
    jobid, store = submit(tmp_path, psik_config, spec)
    job = store.get(jobid)
    wait_until(lambda: job.log_path("stdout", 1).is_file() and "ready" in
               job.log_path("stdout", 1).read_text(), 30, "script to start")  # fmt: skip
    # the wrapper, bash, 3 sleeps, a subshell and the TERM-ignoring bash
    wait_until(lambda: len(job_processes(job.base)) >= 6, 10, "the process tree")
    out = psik_cli("cancel", jobid, config=psik_config)
    assert out.returncode == 0, out.stderr
    assert final_state(job, 30) == "canceled"
    assert job_processes(job.base) == []  # nothing left, the TERM-ignoring child included
    rows = receiver.wait_for(jobid, "canceled")
    assert [r["state"] for r in rows] == ["queued", "active", "canceled"]
    assert states(job)[-1] == (1, "canceled")
    assert "rejected" in job.console.read_text()  # the wrapper's late `canceled` was refused


def test_duration_overrun_is_killed_and_reported(tmp_path, psik_config, receiver):
    spec = {
        "script": "trap '' TERM\necho started\nsleep 300\n",
        "resources": {"duration": 0.02},  # 1.2 s
        "callback": receiver.url,
        "cb_secret": receiver.secret,
    }
    jobid, store = submit(tmp_path, psik_config, spec)
    rows = receiver.wait_for(jobid, "failed")
    assert rows[-1]["info"] == "duration 0.02 min exceeded"
    job = store.get(jobid)
    assert final_state(job, 30) == "failed"
    assert job.log_path("stdout", 1).read_text() == "started\n"


def test_cli_ls_status_logs_restart_rm(tmp_path, psik_config):
    script = 'for i in 1 2 3; do echo "line $i of run $jobndx"; sleep 0.3; done\n'
    jobid, store = submit(tmp_path, psik_config, {"name": "lines", "script": script})
    follow = psik_cli("logs", jobid, "--follow", config=psik_config)
    assert follow.returncode == 0
    assert follow.stdout == "".join(f"line {i} of run 1\n" for i in (1, 2, 3))
    job = store.get(jobid)
    assert final_state(job, 30) == "completed"
    ls = psik_cli("ls", "--state", "completed", config=psik_config)
    assert jobid in ls.stdout and "lines" in ls.stdout
    assert jobid not in psik_cli("ls", "--state", "failed", config=psik_config).stdout
    status = psik_cli("status", jobid, config=psik_config).stdout
    assert "queued" in status and "active" in status and "completed" in status

    out = psik_cli("restart", jobid, config=psik_config)
    assert out.returncode == 0 and "run 2" in out.stdout
    assert final_state(job, 30) == "completed"
    assert states(job)[-4:] == [(1, "completed"), (2, "queued"), (2, "active"), (2, "completed")]
    logs2 = psik_cli("logs", jobid, config=psik_config).stdout
    assert logs2.endswith("line 3 of run 2\n")
    logs1 = psik_cli("logs", jobid, "--jobndx", "1", config=psik_config).stdout
    assert logs1.endswith("line 3 of run 1\n")

    out = psik_cli("rm", jobid, config=psik_config)
    assert out.returncode == 0
    assert not job.base.exists()
    assert "no job" in psik_cli("status", jobid, config=psik_config).stderr


def test_cli_refuses_bad_input_clearly(tmp_path, psik_config):
    bad = tmp_path / "bad.yaml"
    bad.write_text("script: echo\nresources: {duration: soon}\n")
    out = psik_cli("run", str(bad), config=psik_config)
    assert out.returncode == 2
    assert f"{bad}: resources.duration" in out.stderr and "Traceback" not in out.stderr

    bad.write_text("script: echo\n  oops: [\n")
    out = psik_cli("run", str(bad), config=psik_config)
    assert out.returncode == 2 and "line" in out.stderr and "Traceback" not in out.stderr

    good = tmp_path / "good.yaml"
    good.write_text("script: echo hi\n")
    out = psik_cli("run", str(good), "--backend", "nope", config=psik_config)
    assert out.returncode == 2 and "unknown backend 'nope'" in out.stderr

    for cmd in (["status", "123"], ["cancel", "123"], ["logs", "../../etc"], ["rm", "x"]):
        out = psik_cli(*cmd, config=psik_config)
        assert out.returncode == 1 and "no job" in out.stderr, (cmd, out.stderr)

    out = psik_cli("ls", config=tmp_path / "missing.yaml")
    assert out.returncode == 2 and "config file not found" in out.stderr

    # a job that never ran cannot be cancelled; a finished one neither
    out = psik_cli("run", str(good), "--no-submit", config=psik_config)
    jobid = out.stdout.strip()
    out = psik_cli("cancel", jobid, config=psik_config)
    assert out.returncode == 1 and "nothing to cancel" in out.stderr
    out = psik_cli("logs", jobid, "--stream", "stdin", config=psik_config)
    assert out.returncode == 1 and "stream must be one of" in out.stderr


def test_reached_records_and_announces(tmp_path, psik_config, receiver):
    spec = {"script": "true", "callback": receiver.url, "cb_secret": receiver.secret}
    jobid, store = submit(tmp_path, psik_config, spec, "--no-submit")
    job = store.get(jobid)
    out = psik_cli("reached", str(job.base), "1", "queued", "by hand", config=psik_config)
    assert out.returncode == 0, out.stderr
    assert receiver.wait_for(jobid, "queued")[-1]["info"] == "by hand"
    out = psik_cli("reached", str(job.base), "1", "completed", config=psik_config)
    assert out.returncode == 1 and "queued -> completed is not allowed" in out.stderr
    assert states(job) == [(1, "new"), (1, "queued")]
    out = psik_cli("reached", str(tmp_path), "1", "queued", config=psik_config)
    assert out.returncode == 1 and "not a psik job folder" in out.stderr


def test_unreachable_callback_never_breaks_the_job(tmp_path, pki, free_port):
    config = write_config(
        tmp_path / "psik.yaml",
        tmp_path / "jobs",
        pki.client,
        callback={"timeout": 1, "first_delay": 0.1, "max_delay": 0.2, "give_up_after": 0.3},
    )
    url = f"https://127.0.0.1:{free_port()}/cb"  # nothing listens there
    jobid, store = submit(tmp_path, config, {"script": "echo ok", "callback": url})
    job = store.get(jobid)
    assert final_state(job, 60) == "completed"
    console = job.console.read_text()
    assert "callback completed" in console and "giving up" in console


def test_callbacks_are_retried_until_the_receiver_answers(tmp_path, spawn, pki, psik_config):
    from .conftest import start_receiver

    flaky = start_receiver(spawn, pki, tmp_path, fail_first=2, name="flaky")
    spec = {"script": "true", "callback": flaky.url, "cb_secret": flaky.secret}
    jobid, store = submit(tmp_path, psik_config, spec)
    rows = flaky.wait_for(jobid, "completed")
    assert [r["state"] for r in rows] == ["queued", "active", "completed"]
    assert rows[0]["attempt"] == 3  # two 503s, then accepted
    assert "retry 2" in store.get(jobid).console.read_text()
    final_state(store.get(jobid), 30)


def test_receiver_rejects_a_wrong_signature(tmp_path, pki, receiver):
    from certified import Certified

    body = b'{"jobid":"1","jobndx":1,"state":"queued","info":""}'
    with Certified(pki.client).client() as client:
        bad = client.post(receiver.url, content=body, headers={"x-hub-signature-256": "sha256=00"})
        none = client.post(receiver.url, content=body)
        forged = client.post(
            receiver.url, content=body, headers={"x-hub-signature-256": sign("guess", body)}
        )
        good = client.post(
            receiver.url, content=body, headers={"x-hub-signature-256": sign(receiver.secret, body)}
        )
    assert (bad.status_code, none.status_code, forged.status_code) == (401, 401, 401)
    assert good.status_code == 200
    assert len(receiver.received()) == 1


def test_sigterm_to_the_wrapper_alone_is_forwarded_to_the_script_group(
    tmp_path, psik_config, receiver
):
    """Whoever signals the wrapper (an OS shutdown, a scheduler) stops the whole job."""
    script = "trap 'echo got-term; exit 143' TERM\necho ready\nsleep 300 &\nwait\n"
    spec = {"script": script, "callback": receiver.url, "cb_secret": receiver.secret}
    jobid, store = submit(tmp_path, psik_config, spec)
    job = store.get(jobid)
    stdout = job.log_path("stdout", 1)
    wait_until(lambda: stdout.is_file() and "ready" in stdout.read_text(), 30, "script start")
    wrapper = int(job.transitions()[1].info.split(":")[1])
    os.kill(wrapper, signal.SIGTERM)  # the wrapper only, not its group
    assert final_state(job, 30) == "canceled"
    assert job.current().info == "signal 15"
    assert "got-term" in stdout.read_text()  # the script's group got the forwarded SIGTERM
    assert [r["state"] for r in receiver.wait_for(jobid, "canceled")] == [
        "queued",
        "active",
        "canceled",
    ]
