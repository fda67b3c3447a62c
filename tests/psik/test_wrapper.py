"""The execution wrapper's environment and start-up failures (in-process Psik, real jobs)."""

from __future__ import annotations

import pytest

from psik.jobdir import JobDir
from psik.jobs import Psik
from psik.models import Config, JobSpec
from psik.wrapper import _outcome, job_environment

from .helpers import final_state

pytestmark = pytest.mark.timeout(60)


def test_job_environment_layers(tmp_path):
    job = JobDir(tmp_path / "123")
    parent = {"PATH": "/bin", "SLURM_JOB_ID": "9", "PMI_RANK": "0", "jobid": "spoofed"}
    spec = JobSpec(script="x", environment={"A": "1", "mpirun": "mine"})
    env = job_environment(spec, job, 2, {"mpirun": "srun", "nodes": "3"}, parent)
    assert env["PATH"] == "/bin" and env["A"] == "1"
    assert (env["jobid"], env["jobndx"], env["base"]) == ("123", "2", str(job.base))
    assert (env["mpirun"], env["nodes"]) == ("srun", "3")  # psik's values are the contract
    clean = job_environment(
        spec.model_copy(update={"inherit_environment": False}), job, 1, {}, parent
    )
    assert "PATH" not in clean and clean["SLURM_JOB_ID"] == "9" and clean["PMI_RANK"] == "0"


@pytest.mark.parametrize(
    ("reason", "rc", "expected"),
    [
        (None, 0, ("completed", "exit 0")),
        (None, 3, ("failed", "exit 3")),
        (None, -9, ("failed", "signal 9")),
        ("overrun", -15, ("failed", "duration 0.5 min exceeded")),
        ("signal 15", -15, ("canceled", "signal 15")),
        ("signal 15", 0, ("canceled", "signal 15")),
    ],
)
def test_outcome(reason, rc, expected):
    state, info = _outcome(reason, rc, 0.5)
    assert (state.value, info) == expected


def test_shebang_scripts_and_unstartable_ones(tmp_path):
    psik = Psik(Config(prefix=tmp_path / "jobs", kill_grace=1))
    py = psik.run(JobSpec(script="#!/usr/bin/env python3\nimport os\nprint(os.environ['jobid'])\n"))
    bad = psik.run(JobSpec(script="#!/nonexistent/interpreter\n"))
    relative = psik.run(JobSpec(script="pwd > here.txt", directory="sub/dir"))
    assert final_state(py, 30) == "completed"
    assert py.log_path("stdout", 1).read_text() == f"{py.jobid}\n"
    assert final_state(bad, 30) == "failed"
    assert bad.current().info.startswith("cannot start script")
    assert final_state(relative, 30) == "completed"
    where = relative.base / "work" / "sub" / "dir"
    assert (where / "here.txt").read_text() == f"{where}\n"
