"""The SLURM backend on the real single-node test cluster (deploy/slurm/cluster.sh)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from psik.jobdir import JobDir, JobStore
from psik.models import BackendConfig, JobSpec, ResourceSpec
from psik.sbatch import render_sbatch

from .conftest import write_config
from .helpers import final_state, job_processes, psik_cli, states, wait_until
from .test_local import RANKS

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(120)]


def submit(tmp_path, config, spec: dict) -> tuple[str, JobStore]:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = psik_cli("run", str(path), "--backend", "slurm", config=config)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip(), JobStore(yaml.safe_load(config.read_text())["prefix"])


def slurm_state(native: str) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", native], capture_output=True, text=True, timeout=30
    )
    for word in out.stdout.split():
        if word.startswith("JobState="):
            return word.split("=", 1)[1]
    return "gone"


def test_two_rank_mpi_job_runs_through_psik_run(slurm_cluster, tmp_path, psik_config, receiver):
    spec = {
        "name": "mpi2",
        "script": 'echo "mpirun=$mpirun nodes=$nodes"\n"$mpirun" -n 2 python -c "$RANKS"\n',
        "environment": {"RANKS": RANKS},
        "resources": {"process_count": 2, "duration": 2},
        "callback": receiver.url,
        "cb_secret": receiver.secret,
    }
    jobid, store = submit(tmp_path, psik_config, spec)
    rows = receiver.wait_for(jobid, "completed", timeout=90)
    job = store.get(jobid)
    assert final_state(job, 30) == "completed"
    assert [r["state"] for r in rows] == ["queued", "active", "completed"]
    assert states(job) == [(1, "new"), (1, "queued"), (1, "active"), (1, "completed")]
    kind, native = rows[0]["info"].split(":")
    assert kind == "slurm" and native.isdigit()
    out = job.log_path("stdout", 1).read_text()
    assert "mpirun=srun nodes=1" in out
    assert sorted(line for line in out.splitlines() if line.startswith("rank")) == [
        "rank 0 of 2",
        "rank 1 of 2",
    ]
    script = (job.base / "sbatch.1").read_text()
    assert "#SBATCH --ntasks=2" in script and "#SBATCH --time=2" in script
    wait_until(lambda: slurm_state(native) in ("COMPLETED", "gone"), 30, "SLURM to finish")


def test_running_job_is_cancelled_with_psik_cancel(slurm_cluster, tmp_path, psik_config, receiver):
    spec = {
        "script": "echo ready\nsleep 300 &\nsleep 301\n",
        "callback": receiver.url,
        "cb_secret": receiver.secret,
    }
    jobid, store = submit(tmp_path, psik_config, spec)
    job = store.get(jobid)
    receiver.wait_for(jobid, "active", timeout=60)
    stdout = job.log_path("stdout", 1)
    wait_until(lambda: stdout.is_file() and "ready" in stdout.read_text(), 30, "script output")
    native = job.transitions()[1].info.split(":")[1]
    assert slurm_state(native) == "RUNNING"
    out = psik_cli("cancel", jobid, config=psik_config)
    assert out.returncode == 0, out.stderr
    assert final_state(job, 60) == "canceled"
    rows = receiver.wait_for(jobid, "canceled")
    assert [r["state"] for r in rows] == ["queued", "active", "canceled"]
    assert states(job)[-1] == (1, "canceled")
    wait_until(lambda: slurm_state(native) in ("CANCELLED", "gone"), 30, "SLURM to cancel")
    wait_until(lambda: not job_processes(job.base), 30, "the job's processes to exit")


def test_rendered_script_is_accepted_by_sbatch(slurm_cluster, tmp_path):
    spec = JobSpec(
        name="render-check",
        script="true",
        resources=ResourceSpec(duration=0.5, process_count=2, processes_per_node=2),
        attributes={"comment": 'beam time "A" run 355'},
    )
    backend = BackendConfig(type="slurm", queue_name="debug", attributes={"nice": "10"})
    path = tmp_path / "job.sbatch"
    path.write_text(render_sbatch(spec, backend, ["true"], str(tmp_path / "out"), str(tmp_path)))
    out = subprocess.run(
        ["sbatch", "--parsable", "--hold", str(path)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    native = out.stdout.strip().split(";")[0]
    try:
        show = subprocess.run(
            ["scontrol", "show", "job", native], capture_output=True, text=True, timeout=30
        ).stdout
    finally:
        subprocess.run(["scancel", native], timeout=30, check=False)
    assert 'Comment=beam time "A" run 355' in show
    assert "NumTasks=2" in show and "Partition=debug" in show and "Nice=10" in show
    assert "TimeLimit=00:01:00" in show and "JobName=render-check" in show


def submit_pending(tmp_path, config, receiver) -> tuple[JobDir, str]:
    """A job SLURM holds PENDING for an hour; return it and its SLURM id."""
    spec = {
        "script": "echo never",
        "attributes": {"begin": "now+3600"},
        "callback": receiver.url,
        "cb_secret": receiver.secret,
    }
    jobid, store = submit(tmp_path, config, spec)
    job = store.get(jobid)
    return job, job.current().info.split(":")[1]


def test_waiting_job_is_cancelled_from_queued(slurm_cluster, tmp_path, psik_config, receiver):
    job, native = submit_pending(tmp_path, psik_config, receiver)
    jobid = job.jobid
    assert job.current().state.value == "queued" and slurm_state(native) == "PENDING"
    out = psik_cli("cancel", jobid, config=psik_config)
    assert out.returncode == 0, out.stderr
    assert [r["state"] for r in receiver.wait_for(jobid, "canceled")] == ["queued", "canceled"]
    assert states(job) == [(1, "new"), (1, "queued"), (1, "canceled")]
    wait_until(lambda: slurm_state(native) in ("CANCELLED", "gone"), 30, "SLURM to cancel")
    assert not job.log_path("stdout", 1).exists()


def test_a_refused_job_is_failed_with_the_schedulers_message_and_removable(
    slurm_cluster, tmp_path, pki, receiver
):
    config = write_config(
        tmp_path / "psik.yaml",
        tmp_path / "jobs",
        pki.client,
        backends={"bad": {"type": "slurm", "queue_name": "no-such-partition"}},
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"script": "true", "callback": receiver.url,
                                    "cb_secret": receiver.secret}))  # fmt: skip
    out = psik_cli("run", str(path), "--backend", "bad", config=config)
    assert out.returncode == 1 and "invalid partition" in out.stderr.lower(), out.stderr
    store = JobStore(tmp_path / "jobs")
    (job,) = store.list()
    assert states(job) == [(1, "new"), (1, "failed")]
    assert "invalid partition" in job.current().info.lower()
    rows = receiver.wait_for(job.jobid, "failed")
    assert [r["state"] for r in rows] == ["failed"]
    assert psik_cli("rm", job.jobid, config=config).returncode == 0
    assert store.list() == []


def test_reconciler_fails_a_job_slurm_dropped(slurm_cluster, tmp_path, psik_config, receiver):
    job, native = submit_pending(tmp_path, psik_config, receiver)
    jobid = job.jobid
    out = psik_cli("reconcile", config=psik_config)
    assert out.returncode == 0 and out.stdout == ""  # alive: nothing to do
    subprocess.run(["scancel", native], timeout=30, check=True)  # behind psik's back
    wait_until(lambda: slurm_state(native) in ("CANCELLED", "gone"), 30, "SLURM to cancel")
    out = psik_cli("reconcile", config=psik_config)
    assert out.returncode == 0 and f"{jobid}  failed" in out.stdout, out
    assert states(job) == [(1, "new"), (1, "queued"), (1, "failed")]
    assert "CANCELLED" in job.current().info or "no longer knows" in job.current().info
    assert [r["state"] for r in receiver.wait_for(jobid, "failed")] == ["queued", "failed"]


def test_paper_jobspec_gets_two_tasks_and_srun_runs(slurm_cluster, tmp_path, psik_config, receiver):
    """The paper's JobSpec (no process_count) must give SLURM_NTASKS=2 and `srun -n 2`."""
    spec = {
        "name": "machine info",
        "script": 'echo "ntasks=$SLURM_NTASKS"\nsrun -n 2 hostname\n',
        "resources": {
            "duration": 2,
            "node_count": 1,
            "processes_per_node": 2,
            "cpu_cores_per_process": 1,
        },
        "callback": receiver.url,
        "cb_secret": receiver.secret,
    }
    jobid, store = submit(tmp_path, psik_config, spec)
    receiver.wait_for(jobid, "completed", timeout=90)
    job = store.get(jobid)
    assert final_state(job, 30) == "completed", job.log_path("stderr", 1).read_text()
    lines = job.log_path("stdout", 1).read_text().splitlines()
    assert lines[0] == "ntasks=2"
    assert len(lines[1:]) == 2  # srun -n 2 ran hostname twice
