"""Job folders: layout, unique ids under concurrent creation, flock-serialized transitions."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from psik.errors import IllegalTransition, JobNotFound
from psik.jobdir import JobStore, parse_status
from psik.models import Config, JobSpec, JobState


def test_layout_and_first_row(tmp_path):
    store = JobStore(tmp_path / "jobs")
    job = store.create(JobSpec(script="true"), Config(prefix=tmp_path / "jobs"), owner="cn:x")
    assert sorted(p.name for p in job.base.iterdir()) == [
        "callbacks.cursor",
        "config.json",
        "log",
        "owner",
        "spec.json",
        "status.csv",
        "work",
    ]
    assert (job.base / "callbacks.cursor").read_text() == "1"  # `new` has no callback
    assert (store.prefix / ".journal").read_text() == f"{job.jobid}\n"  # for the index
    assert job.status_path.read_text().splitlines()[0] == "time,jobndx,state,info"
    assert [(t.jobndx, t.state) for t in job.transitions()] == [(1, JobState.new)]
    assert job.workdir() == job.base / "work"
    assert store.get(job.jobid).spec().script == "true"
    assert job.owner() == "cn:x"


def test_illegal_transition_is_noted_not_written(tmp_path):
    store = JobStore(tmp_path)
    job = store.create(JobSpec(script="true"), Config(prefix=tmp_path))
    before = job.status_path.read_text()
    with pytest.raises(IllegalTransition, match="new -> completed"):
        job.record(1, JobState.completed, "exit 0")
    assert job.status_path.read_text() == before
    assert "rejected (1, completed" in job.console.read_text()


def test_info_with_commas_quotes_and_newlines_round_trips(tmp_path):
    job = JobStore(tmp_path).create(JobSpec(script="true"), Config(prefix=tmp_path))
    info = 'a,b "c"\nd'
    job.record(1, JobState.queued, info)
    assert job.current().info == info
    assert parse_status(job.status_path.read_text())[-1].info == info


@pytest.mark.parametrize("jobid", ["../etc", "12/..", "", "abc", "1" * 30, "1 2"])
def test_bad_or_unknown_ids(tmp_path, jobid):
    with pytest.raises(JobNotFound):
        JobStore(tmp_path).get(jobid)


def test_unknown_numeric_id(tmp_path):
    with pytest.raises(JobNotFound, match="no job 42"):
        JobStore(tmp_path).get("42")


CREATE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from psik.jobdir import JobStore
    from psik.models import Config, JobSpec
    prefix = Path(sys.argv[1])
    store, spec, cfg = JobStore(prefix), JobSpec(script="true"), Config(prefix=prefix)
    print("\\n".join(store.create(spec, cfg).jobid for _ in range(int(sys.argv[2]))))
    """
)


@pytest.mark.timeout(180)
def test_two_processes_creating_1000_jobs_each_never_collide(tmp_path):
    prefix = tmp_path / "jobs"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CREATE, str(prefix), "1000"], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=170)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    ids = outs[0] + outs[1]
    assert len(ids) == 2000 and len(set(ids)) == 2000
    jobs = JobStore(prefix).list()
    assert len(jobs) == 2000
    assert all([(t.jobndx, t.state) for t in j.transitions()] == [(1, JobState.new)] for j in jobs)


RACE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from psik.errors import IllegalTransition
    from psik.jobdir import JobDir
    from psik.models import JobState
    job = JobDir(Path(sys.argv[1]))
    wins = 0
    for ndx in range(1, 51):
        for state in (JobState.queued, JobState.active, JobState.completed):
            try:
                job.record(ndx, state, sys.argv[2])
                wins += 1
            except IllegalTransition:
                pass
        try:
            job.record(ndx + 1, JobState.queued, sys.argv[2])
        except IllegalTransition:
            pass
    print(wins)
    """
)


@pytest.mark.timeout(120)
def test_concurrent_writers_produce_only_legal_rows(tmp_path):
    """Three processes race through 50 runs; the file must still be one legal history."""
    from psik.states import check_transition

    job = JobStore(tmp_path).create(JobSpec(script="true"), Config(prefix=tmp_path))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, str(job.base), f"w{i}"], stdout=subprocess.PIPE
        )
        for i in range(3)
    ]
    for proc in procs:
        proc.communicate(timeout=100)
        assert proc.returncode == 0
    rows = job.transitions()
    current = None
    for row in rows:
        check_transition(current, row.jobndx, row.state)
        current = (row.jobndx, row.state)
    assert len(rows) == len({(r.jobndx, r.state) for r in rows})
