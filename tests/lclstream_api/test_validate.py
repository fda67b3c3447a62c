"""`lclstream validate` (offline, the server's models): native and upstream files, errors
naming the field, a user's handlers dropped."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from lclstream_api.validate import ConfigProblems, native_config, without_handlers

pytestmark = pytest.mark.timeout(60)
UPSTREAM = Path(__file__).resolve().parents[1] / "lclstreamer" / "upstream"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["lclstream", "validate", *args], capture_output=True, text=True)


@pytest.mark.parametrize("name", ["random-to-nng.yaml", "random-internal.yaml"])
def test_upstream_files_validate(name):
    got = run(str(UPSTREAM / name))
    assert got.returncode == 0 and got.stdout.strip().endswith("valid"), got.stderr


def test_invalid_config_names_the_field(tmp_path):
    cfg = tmp_path / "bad.yaml"
    source = {"type": "synthetic", "number_of_events": 4, "detectors": {"d": {"shape": [2, 2]}}}
    doc = {"event_source": source, "data_sources": {"x": {"type": "detector", "source": "d"}}}
    cfg.write_text(yaml.safe_dump(doc))
    got = run(str(cfg))
    assert got.returncode == 2 and "config.data_serializer" in got.stderr, got.stderr


def test_handlers_are_the_services():
    data, had = without_handlers({"a": 1, "data_handlers": [{"type": "null"}]})
    assert had and data == {"a": 1}
    with pytest.raises(ConfigProblems, match="config.data_handlers: set by the service"):
        native_config({"data_handlers": []})
    with pytest.raises(ConfigProblems, match="must be a mapping"):
        native_config([1])
