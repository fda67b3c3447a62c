"""Bad input under `mpirun -n 2`: one clear located error, non-zero exit, no traceback,
and every rank exits (run_cli fails the test if mpirun does not finish)."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest

from .helpers import run_cli, synthetic_config, write_config

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]


def _assert_clean_failure(res, code: int, *needles: str) -> str:
    assert res.code == code, (res.code, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    errors = [line for line in res.stderr.splitlines() if line.startswith("lclstreamer: error")]
    assert len(errors) == 1, res.stderr  # reported once, not once per rank
    for needle in needles:
        assert needle in res.stderr, (needle, res.stderr)
    return res.stderr


def _hdf5_config(tmp_path, files: str) -> dict:
    cfg = synthetic_config(tmp_path / "out", batch=4)
    cfg["event_source"] = {
        "type": "hdf5",
        "files": files,
        "datasets": {"det": "/entry_1/data_1/data"},
    }
    cfg["data_sources"] = {
        "frames": {"type": "detector", "source": "det"},
        "index": {"type": "event_index"},
    }
    cfg["data_serializer"]["fields"] = {"frames": "/data", "index": "/index"}
    return cfg


def test_invalid_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("event_source:\n  type: synthetic\n  number_of_events: [1, 2\n")
    _assert_clean_failure(run_cli(["-c", str(bad)], ranks=2), 2, "invalid YAML", "line 4")


def test_unknown_type_lists_valid_ones(tmp_path):
    cfg = synthetic_config(tmp_path)
    cfg["data_handlers"][0]["type"] = "carrier_pigeon"
    path = write_config(tmp_path / "c.yaml", cfg)
    _assert_clean_failure(
        run_cli(["-c", str(path)], ranks=2),
        2,
        "data_handlers[0].type",
        "line",
        "unknown type 'carrier_pigeon'; valid types: file, nng_push, null, zmq_pub, zmq_push,"
        " zmq_rep",
    )


def test_wrong_field_type_and_cross_field_problem(tmp_path):
    cfg = synthetic_config(tmp_path)
    cfg["processing_pipeline"]["batch_size"] = "ten"
    cfg["data_serializer"]["fields"]["ghost"] = "/ghost"
    path = write_config(tmp_path / "c.yaml", cfg)
    err = _assert_clean_failure(
        run_cli(["-c", str(path)], ranks=2), 2, "processing_pipeline.batch_size", "'ten'"
    )
    assert f"{path}: invalid configuration" in err
    # the cross-field check runs once the sections themselves are valid
    cfg["processing_pipeline"]["batch_size"] = 4
    write_config(path, cfg)
    _assert_clean_failure(
        run_cli(["-c", str(path), "--validate"]),
        2,
        "data_serializer.fields.ghost",
        "'ghost' is not in data_sources",
    )


def test_missing_config_and_missing_data_file(tmp_path):
    _assert_clean_failure(
        run_cli(["-c", str(tmp_path / "nope.yaml")], ranks=2), 2, "nope.yaml does not exist"
    )
    path = write_config(tmp_path / "c.yaml", _hdf5_config(tmp_path, str(tmp_path / "*.cxi")))
    _assert_clean_failure(run_cli(["-c", str(path)], ranks=2), 1, "no file matches", "*.cxi")


def test_shape_change_in_a_batch_stops_every_rank(tmp_path):
    """Two files whose frames differ in shape: the rank that meets the change reports it and
    the whole job ends (the other rank is not left waiting)."""
    for name, shape in (("a.cxi", (5, 4, 6)), ("b.cxi", (5, 4, 7))):
        with h5py.File(tmp_path / name, "w") as f:
            f["/entry_1/data_1/data"] = np.zeros(shape, dtype=np.float32)
    path = write_config(tmp_path / "c.yaml", _hdf5_config(tmp_path, str(tmp_path / "*.cxi")))
    res = run_cli(["-c", str(path), "--no-progress"], ranks=2)
    assert res.code != 0 and "Traceback" not in res.stderr
    # whichever rank meets its first wide frame first (event 5 on rank 1, 6 on rank 0) reports
    pattern = (
        r"lclstreamer: error: rank (0|1): field 'frames' changed in event (5|6): it is"
        r" float32 \(4, 7\) but was float32 \(4, 6\) from event (0|1)"
    )
    assert re.search(pattern, res.stderr), res.stderr


def test_incomplete_event_without_skip_is_an_error(tmp_path):
    cfg = synthetic_config(tmp_path / "out", n=10)
    cfg["event_source"]["detectors"]["det"]["missing_every"] = 4
    res = run_cli(["-c", str(write_config(tmp_path / "c.yaml", cfg)), "--no-progress"])
    _assert_clean_failure(
        res, 1, "event 3 has no value for data source 'frames'", "skip_incomplete_events: true"
    )


def test_setup_failure_on_one_rank_is_reported_once_and_ends_the_job(tmp_path, free_port):
    """Both ranks try to listen on one address: rank 1 cannot; rank 0 reports it, naming
    the rank, and both exit."""
    cfg = synthetic_config(tmp_path / "out")
    url = f"tcp://127.0.0.1:{free_port()}"
    cfg["data_handlers"] = [{"type": "nng_push", "urls": [url], "mode": "listen"}]
    res = run_cli(["-c", str(write_config(tmp_path / "c.yaml", cfg))], ranks=2)
    err = _assert_clean_failure(res, 1, f"nng_push: cannot listen {url}")
    assert re.search(r"\(rank [01]\)$", err.strip().splitlines()[0]), err


def test_no_consumer_within_send_timeout(tmp_path, free_port):
    cfg = synthetic_config(tmp_path / "out")
    url = f"tcp://127.0.0.1:{free_port()}"
    cfg["data_handlers"] = [{"type": "nng_push", "urls": [url], "send_timeout": 0.5}]
    res = run_cli(["-c", str(write_config(tmp_path / "c.yaml", cfg)), "--no-progress"])
    _assert_clean_failure(res, 1, f"nng_push: no peer took a message within 0.5 s ({url})")
