"""JobSpec/Config models, JSON/YAML loading with located errors, config search order."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from psik.errors import SpecError
from psik.jobdir import load_spec
from psik.models import Config, JobSpec, JobState
from psik.settings import config_path, load_config


def test_yaml_and_json_load_to_the_same_spec(tmp_path):
    doc = {
        "name": "scan",
        "script": "echo hi\n",
        "environment": {"RUN": "355"},
        "resources": {"duration": 2.5, "process_count": 4, "processes_per_node": 2},
        "attributes": {"comment": "beamtime"},
        "callback": "https://lclstream/cb",
        "cb_secret": "x",
    }
    (tmp_path / "a.json").write_text(json.dumps(doc))
    (tmp_path / "a.yaml").write_text(
        "name: scan\nscript: |\n  echo hi\nenvironment: {RUN: '355'}\n"
        "resources: {duration: 2.5, process_count: 4, processes_per_node: 2}\n"
        "attributes: {comment: beamtime}\ncallback: https://lclstream/cb\ncb_secret: x\n"
    )
    a, b = load_spec(tmp_path / "a.json"), load_spec(tmp_path / "a.yaml")
    assert a == b
    assert a.resources.process_count == 4 and a.backend == "default"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: x\nscript: [unclosed\n", "line 3"),
        ("- just\n- a list\n", "expected a mapping"),
        ("script: echo\nbogus: 1\n", "bogus: Extra inputs are not permitted"),
        ("script: echo\nresources: {duration: -1}\n", "resources.duration"),
        ("script: echo\nresources: {node_count: 0}\n", "resources.node_count"),
        ("name: x\n", "script: Field required"),
        ("script: echo\nattributes: {partition: big}\n", "attributes: Value error"),
        ("script: echo\nattributes: {'Bad Key': 1}\n", "attributes"),
        ("script: echo\nenvironment: {'1X': a}\n", "environment"),
        ("script: echo\ncallback: ftp://x\n", "callback"),
        ("script: echo\ncb_secret: s\n", "cb_secret given without a callback"),
        ('script: echo\nname: "a\\tb"\n', "name: Value error, name must be one line"),
        (
            "script: echo\nresources: {node_count: 1, processes_per_node: 2, process_count: 5}\n",
            "process_count 5 contradicts node_count 1 x processes_per_node 2",
        ),
        (
            "script: echo\nresources: {node_count: 4, process_count: 6}\n",
            "process_count 6 is not a multiple of node_count 4",
        ),
        (
            "script: echo\nresources: {processes_per_node: 4, process_count: 6}\n",
            "process_count 6 is not a multiple of processes_per_node 4",
        ),
        ("script: echo\ncb_headers: {'Bad Header': x}\ncallback: https://x/cb\n", "cb_headers"),
        (
            "script: echo\ncb_headers: {X-Hub-Signature-256: x}\ncallback: https://x/cb\n",
            "cb_headers may not set 'X-Hub-Signature-256'",
        ),
        ("script: echo\ncb_headers: {X-A: b}\n", "cb_headers given without a callback"),
    ],
)
def test_bad_specs_name_file_and_field(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert fragment in str(err.value)


def test_malformed_json_reports_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"script": "x",\n "name": }\n')
    with pytest.raises(SpecError, match=r"bad\.json: line 2"):
        load_spec(path)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="No such file"):
        load_spec(tmp_path / "nope.yaml")


def test_models_forbid_extra_fields():
    with pytest.raises(ValidationError):
        JobSpec.model_validate({"script": "x", "resources": {"gpus": 1}})
    with pytest.raises(ValidationError):
        Config.model_validate({"prefix": "/tmp", "backends": {"x": {"type": "pbs"}}})
    with pytest.raises(ValidationError):
        Config.model_validate({"backends": {}})


def test_final_states():
    assert {s for s in JobState if s.final} == {
        JobState.completed,
        JobState.failed,
        JobState.canceled,
    }


def test_config_search_order(tmp_path):
    flag = tmp_path / "flag.yaml"
    env_file = tmp_path / "env.yaml"
    venv = tmp_path / "venv"
    (venv / "etc").mkdir(parents=True)
    venv_file = venv / "etc" / "psik.yaml"
    for path, prefix in ((flag, "a"), (env_file, "b"), (venv_file, "c")):
        path.write_text(f"prefix: {tmp_path / prefix}\n")
    environ = {"PSIK_CONFIG": str(env_file), "VIRTUAL_ENV": str(venv)}
    assert config_path(flag, environ) == flag
    assert config_path(None, environ) == env_file
    assert config_path(None, {"VIRTUAL_ENV": str(venv)}) == venv_file
    assert load_config(None, environ).prefix == tmp_path / "b"
    # an explicit but missing file is an error, not a silent fallback
    with pytest.raises(SpecError, match="not found"):
        config_path(tmp_path / "missing.yaml", environ)
    with pytest.raises(SpecError, match="not found"):
        config_path(None, {"PSIK_CONFIG": str(tmp_path / "missing.yaml")})


def test_bad_config_is_located(tmp_path):
    path = tmp_path / "psik.yaml"
    path.write_text("prefix: /x\nbackends:\n  big: {type: pbs}\n")
    with pytest.raises(SpecError, match=r"psik\.yaml: backends\.big\.type"):
        load_config(path, {})


def test_example_service_settings_are_valid():
    from pathlib import Path

    from psik.api.settings import load_settings

    example = Path(__file__).resolve().parents[2] / "services" / "psik-api" / "psik-api.yaml"
    settings = load_settings(example, {})
    assert set(settings.psik.backends) == {"default", "slurm"}
    assert settings.psik.backends["slurm"].queue_name == "milano"
    assert settings.job_config().certified == settings.certified


def test_psik_api_refuses_bad_settings_clearly(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "psik-api.yaml"
    bad.write_text("listen: https://127.0.0.1:1\npsik: {prefix: /x, backends: {a: {type: pbs}}}\n")
    for path, fragment in ((bad, "psik.backends.a.type"), (tmp_path / "no.yaml", "not found")):
        out = subprocess.run(
            [sys.executable, "-m", "psik.api.cli", "serve", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2 and fragment in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


@pytest.mark.parametrize("key", ["accou", "partit", "qo", "a", "outp", "export-file", "workdir"])
def test_abbreviated_reserved_sbatch_options_are_refused(key):
    # sbatch takes any unambiguous prefix of a long option: `--accou` sets the account.
    with pytest.raises(ValidationError, match="set by psik or the operator"):
        JobSpec(script="true", attributes={key: "x"})


def test_allowed_attributes_pass():
    spec = JobSpec(script="true", attributes={"comment": "run 355", "mem": "4G", "time-min": "5"})
    assert spec.attributes["comment"] == "run 355"


def test_backend_types_come_from_the_registry(monkeypatch):
    """A backend is one module plus one REGISTRY line: the config type, its validation
    and the reserved JobSpec attributes all follow the table."""
    from psik import backends
    from psik.backends.local import LocalBackend
    from psik.models import BackendConfig

    with pytest.raises(
        ValidationError, match="unknown backend type 'pbs' \\(known: local, slurm\\)"
    ):
        BackendConfig(type="pbs")
    monkeypatch.setitem(backends.REGISTRY, "pbs", "psik.backends.local:LocalBackend")
    backend = backends.make_backend(BackendConfig(type="pbs"), 1.0)
    assert isinstance(backend, LocalBackend)
    assert backends.reserved_attribute("partition") == "partition"  # from SlurmBackend
    assert backends.reserved_attribute("comment") is None


@pytest.mark.parametrize(
    ("resources", "nodes", "procs", "ppn"),
    [
        ({}, None, 1, None),  # nothing asked: one process, the scheduler picks the node
        ({"node_count": 1, "processes_per_node": 2}, 1, 2, 2),  # the paper's JobSpec
        ({"node_count": 3}, 3, 3, None),  # SLURM's default: one task per node
        ({"processes_per_node": 4}, None, 4, 4),
        ({"process_count": 8}, None, 8, None),
        ({"process_count": 4, "processes_per_node": 2, "node_count": 2}, 2, 4, 2),
        ({"process_count": 6, "processes_per_node": 3}, None, 6, 3),  # SLURM picks 2 nodes
        ({"process_count": 6, "node_count": 2}, 2, 6, None),
        ({"node_count": 2, "process_count": None, "processes_per_node": None}, 2, 2, None),
    ],
)
def test_process_count_is_derived_when_unset(resources, nodes, procs, ppn):
    res = JobSpec.model_validate({"script": "x", "resources": resources}).resources
    assert (res.node_count, res.process_count, res.processes_per_node) == (nodes, procs, ppn)
    again = JobSpec.model_validate_json(JobSpec(script="x", resources=res).model_dump_json())
    assert again.resources == res  # the derived form validates to itself


def test_upstream_jobspec_fields_are_accepted():
    """What upstream psik's own JobSpec.model_dump(mode='json') writes (nulls, ints)."""
    doc = {
        "name": "machine info",
        "directory": None,
        "script": "hostname",
        "environment": {},
        "inherit_environment": True,
        "resources": {
            "duration": 10,
            "node_count": None,
            "process_count": None,
            "processes_per_node": None,
            "cpu_cores_per_process": 1,
            "gpu_cores_per_process": 0,
            "exclusive_node_use": True,
        },
        "backend": "default",
        "attributes": {},
        "callback": "https://cb.example/hook",
        "cb_headers": {"Authorization": "Bearer t"},
        "cb_secret": "s3",
    }
    spec = JobSpec.model_validate(doc)
    assert spec.name == "machine info" and spec.resources.process_count == 1
    assert spec.resources.duration == 10 and spec.resources.exclusive_node_use
    assert spec.cb_headers == {"Authorization": "Bearer t"}
    assert JobSpec.model_validate({"script": "x", "name": None}).name == "job"


def test_psik_api_check_prints_settings_or_names_the_bad_field(tmp_path):
    """`psik-api check` (docs/operators.md, step 3): the example settings pass and print
    as JSON; a bad value is one located error line and exit 2."""
    import subprocess
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "services" / "psik-api" / "psik-api.yaml"
    ok = subprocess.run(["psik-api", "check", "-c", str(example)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["run_as"] == "caller"
    bad = tmp_path / "psik-api.yaml"
    bad.write_text("run_as: everyone\n")
    out = subprocess.run(["psik-api", "check", "-c", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2, out
    assert "run_as" in out.stderr and str(bad) in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
