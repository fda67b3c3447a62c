"""sbatch script rendering (pure) and sbatch output parsing."""

from __future__ import annotations

import pytest

from psik.models import BackendConfig, JobSpec, ResourceSpec
from psik.sbatch import parse_sbatch_output, render_sbatch, sbatch_options

CMD = ["/venv/bin/python", "-m", "psik.wrapper", "/jobs/my job/17", "2"]


def header(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


def test_every_resource_and_backend_field_is_rendered():
    spec = JobSpec(
        name="streamer",
        script="true",
        resources=ResourceSpec(
            duration=30.5,
            node_count=2,
            process_count=8,
            processes_per_node=4,
            cpu_cores_per_process=3,
            gpu_cores_per_process=1,
            exclusive_node_use=True,
        ),
        attributes={"comment": "run 355 of mfx", "mail-type": "END"},
    )
    backend = BackendConfig(
        type="slurm",
        queue_name="milano",
        project_name="lcls:mfx",
        reservation_id="beamtime",
        attributes={"mail-type": "NONE", "qos": "high"},
    )
    script = render_sbatch(spec, backend, CMD, console="/jobs/my job/17/log/console", workdir="/w")
    assert script.startswith("#!/bin/bash\n")
    assert header(script) == [
        '#SBATCH --comment="run 355 of mfx"',  # the job's first: later lines win in sbatch
        "#SBATCH --job-name=streamer",
        "#SBATCH --time=31",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks=8",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --cpus-per-task=3",
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --exclusive",
        "#SBATCH --partition=milano",
        "#SBATCH --account=lcls:mfx",
        "#SBATCH --reservation=beamtime",
        "#SBATCH --mail-type=NONE",  # the operator's value wins over the spec's
        "#SBATCH --qos=high",
        '#SBATCH --output="/jobs/my job/17/log/console"',
        "#SBATCH --open-mode=append",
        "#SBATCH --chdir=/w",
        "#SBATCH --export=ALL",
    ]
    assert script.rstrip().endswith("exec /venv/bin/python -m psik.wrapper '/jobs/my job/17' 2")


def test_minimal_spec_renders_no_optional_lines():
    opts = dict(sbatch_options(JobSpec(script="x"), BackendConfig(type="slurm")))
    assert opts == {
        "job-name": "job",
        "time": "10",
        "ntasks": "1",
        "cpus-per-task": "1",
    }


def test_paper_jobspec_renders_two_tasks_on_one_node():
    """node_count 1 x processes_per_node 2 without process_count: SLURM_NTASKS must be 2."""
    spec = JobSpec.model_validate(
        {
            "name": "machine info",
            "script": "x",
            "resources": {"node_count": 1, "processes_per_node": 2, "cpu_cores_per_process": 1},
        }
    )
    lines = header(render_sbatch(spec, BackendConfig(type="slurm"), ["true"], "/c", "/w"))
    assert lines[:6] == [
        '#SBATCH --job-name="machine info"',
        "#SBATCH --time=10",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=2",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --cpus-per-task=1",
    ]


def test_fractional_minutes_round_up_to_at_least_one():
    spec = JobSpec(script="x", resources=ResourceSpec(duration=0.05))
    assert dict(sbatch_options(spec, BackendConfig(type="slurm")))["time"] == "1"


def test_quotes_in_values_are_escaped():
    spec = JobSpec(script="x", attributes={"comment": 'say "hi"'})
    script = render_sbatch(spec, BackendConfig(type="slurm"), CMD, console="/c", workdir="/w")
    assert '#SBATCH --comment="say \\"hi\\""' in script


@pytest.mark.parametrize(
    ("out", "ident"), [("123\n", "123"), ("4567;cluster\n", "4567"), ("\n89\n", "89")]
)
def test_parse_sbatch_output(out, ident):
    assert parse_sbatch_output(out) == ident


def test_parse_sbatch_output_without_id():
    with pytest.raises(ValueError, match="no job id"):
        parse_sbatch_output("sbatch: error: Batch job submission failed\n")
