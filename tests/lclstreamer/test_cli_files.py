"""Acceptance: `mpirun -n 2 lclstreamer` writes files holding every configured event once."""

from __future__ import annotations

import json
import shutil
import signal
import time

import numpy as np
import pytest
import yaml

from lclstreamer.sources.frames import timestamp, wavelength_m

from .helpers import (
    EXAMPLES,
    LCLSTREAMER,
    MPIRUN,
    read_message,
    run_cli,
    synthetic_config,
    write_config,
)

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]

BITSHUFFLE = 32008
GZIP, SHUFFLE = 1, 2


def _union(out_dir):
    """Every message file of a run, read back."""
    files = sorted(out_dir.glob("*.h5"))
    assert not list(out_dir.glob(".*.part")), "partial files left behind"
    return [(p.name, read_message(p)) for p in files]


def test_example_synthetic_to_files_two_ranks(tmp_path):
    """The shipped example, compressed with bitshuffle-LZ4, run on 2 ranks."""
    shutil.copy(EXAMPLES / "synthetic-to-files.yaml", tmp_path / "cfg.yaml")
    cfg = yaml.safe_load((tmp_path / "cfg.yaml").read_text())
    res = run_cli(["-c", "cfg.yaml", "--no-progress"], ranks=2, cwd=tmp_path)
    assert res.code == 0, res.stderr
    n = cfg["event_source"]["number_of_events"]
    batch = cfg["processing_pipeline"]["batch_size"]
    msgs = _union(tmp_path / "lclstreamer-out")
    seen: list[int] = []
    for name, m in msgs:
        a = m["attrs"]
        assert name.startswith(f"synthetic-r{a['rank']:04d}-{a['seq']:06d}")
        idx = m["/entry_1/event_index"]
        assert a["n_events"] == len(idx) and a["first_event"] == idx[0]
        assert a["ranks"] == 2 and a["source_identifier"] == cfg["source_identifier"]
        assert np.all(idx % 2 == a["rank"]), "round-robin partition"
        frames = m["/entry_1/data_1/data"]
        assert frames.shape == (len(idx), 16, 352, 384) and frames.dtype == np.float32
        assert m["filters"]["/entry_1/data_1/data"] == ((1, 16, 352, 384), [BITSHUFFLE])
        assert m["/LCLS/timestamp"].dtype == np.uint64
        assert m["/LCLS/event_codes"].shape == (len(idx), 256)
        seen.extend(int(i) for i in idx)
    assert sorted(seen) == list(range(n)), "every event exactly once"
    assert len(msgs) == 2 * -(-n // 2 // batch)
    assert res.summary()["events"] == n and res.summary()["ranks"] == 2


def test_uncompressed_with_skipped_events(tmp_path):
    """No compression; every 5th frame missing and skipped; values are what the source made."""
    out = tmp_path / "out"
    cfg = synthetic_config(out, n=23, batch=4, compression="none")
    cfg["skip_incomplete_events"] = True
    cfg["event_source"]["detectors"]["det"]["missing_every"] = 5
    res = run_cli(["-c", str(write_config(tmp_path / "c.yaml", cfg))], ranks=2)
    assert res.code == 0, res.stderr
    expected = [i for i in range(23) if i % 5 != 4]
    seen = []
    for _, m in _union(out):
        idx = m["/entry_1/event_index"]
        seen.extend(int(i) for i in idx)
        assert m["filters"]["/entry_1/data_1/data"] == (None, []), "uncompressed: contiguous"
        assert m["/entry_1/data_1/data"].dtype == np.float32
        stamps = [timestamp(1_700_000_000.0, 120.0, int(i)) for i in idx]
        assert m["/LCLS/timestamp"].tolist() == stamps
        assert np.all(np.abs(m["/LCLS/wavelength"] - wavelength_m(9500) * 1e10) < 0.01)
        assert [s.decode() for s in m["/LCLS/source"]] == ["test:synthetic"] * len(idx)
        assert m["attrs"]["n_events"] <= 4
    assert sorted(seen) == expected
    summary = res.summary()
    assert summary["skipped"] == 23 - len(expected) and summary["events"] == len(expected)
    assert {"events", "skipped", "batches", "bytes", "seconds", "events/s", "MB/s"} <= set(summary)
    assert "rank 0 of 2" in res.stderr  # progress lines on rank 0


def test_gzip_shuffle_single_process_and_max_events(tmp_path):
    """Without mpirun (one process), -n caps the run, gzip+shuffle filters applied."""
    out = tmp_path / "out"
    cfg = synthetic_config(out, n=50, batch=6, compression="gzip_with_shuffle")
    res = run_cli(["-c", str(write_config(tmp_path / "c.yaml", cfg)), "-n", "13"])
    assert res.code == 0, res.stderr
    msgs = _union(out)
    assert [int(i) for _, m in msgs for i in m["/entry_1/event_index"]] == list(range(13))
    assert [m["attrs"]["n_events"] for _, m in msgs] == [6, 6, 1]
    assert msgs[0][1]["filters"]["/entry_1/data_1/data"][1] == [SHUFFLE, GZIP]
    assert res.summary() | {"seconds": 0, "events/s": 0, "MB/s": 0, "cpu_seconds": 0} == {
        "events": 13,
        "skipped": 0,
        "batches": 3,
        "bytes": res.summary()["bytes"],
        "seconds": 0,
        "events/s": 0,
        "MB/s": 0,
        "ranks": 1,
        "cpu_seconds": 0,
        "complete": True,
    }


def test_sigterm_flushes_and_reports(tmp_path, spawn):
    """SIGTERM to the job: every rank stops reading, flushes its partial batch, closes its
    handlers; rank 0 prints the summary marked interrupted; exit status 130."""
    out = tmp_path / "out"
    cfg = synthetic_config(out, n=100_000, batch=4, rate_limit_hz=50)
    path = write_config(tmp_path / "c.yaml", cfg)
    proc = spawn([MPIRUN, "-n", "2", LCLSTREAMER, "-c", str(path), "--no-progress"])
    deadline = time.monotonic() + 30
    while len(list(out.glob("*.h5"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 130, proc.stderr()
    summary = json.loads(proc.stdout().strip().splitlines()[-1])
    assert summary["interrupted"] is True and 0 < summary["events"] < 100_000
    msgs = _union(out)
    assert len(msgs) == summary["batches"]
    assert sum(m["attrs"]["n_events"] for _, m in msgs) == summary["events"]
    assert "Traceback" not in proc.stderr()
