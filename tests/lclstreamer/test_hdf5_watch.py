"""The hdf5 source's watch mode: files written while the streamer runs are each streamed
once across 2 ranks, and the run ends by the configured condition."""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest

from lclstreamer.sources.hdf5watch import Watcher

from .helpers import LCLSTREAMER, MPIRUN, read_message, run_cli, write_config

pytestmark = [pytest.mark.timeout(180)]

ROWS = 5


def _write(path, first: int, rows: int = ROWS) -> None:
    """A CXI-like file whose frame values are the global event indices."""
    idx = np.arange(first, first + rows)
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = np.ones((rows, 4, 6), np.uint16) * idx[:, None, None]
        f["/LCLS/photon_energy_eV"] = 9000.0 + idx


def _config(data, out, **watch) -> dict:
    return {
        "event_source": {
            "type": "hdf5",
            "files": str(data / "run7-*.h5"),
            "datasets": {"det": "/entry_1/data_1/data"},
            "photon_energy_ev": "/LCLS/photon_energy_eV",
            "read_block": 2,
            "watch": {"poll_interval": 0.1, "settle": 0.3, **watch},
        },
        "data_sources": {
            "frames": {"type": "detector", "source": "det"},
            "index": {"type": "event_index"},
            "energy": {"type": "photon_energy"},
        },
        "processing_pipeline": {"type": "batch", "batch_size": 3},
        "data_serializer": {
            "type": "hdf5",
            "fields": {"frames": "/data", "index": "/index", "energy": "/energy"},
        },
        "data_handlers": [{"type": "file", "directory": str(out), "prefix": "w"}],
    }


def _streamed(out) -> list[int]:
    seen = []
    for path in sorted(out.glob("*.h5")):
        msg = read_message(path)
        for frame, index, energy in zip(msg["/data"], msg["/index"], msg["/energy"], strict=True):
            assert (frame == index).all() and energy == 9000.0 + index
            seen.append(int(index))
    return sorted(seen)


@pytest.mark.mpi
def test_files_written_during_the_run_stream_once_and_marker_ends_it(tmp_path, spawn):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    write_config(tmp_path / "cfg.yaml", _config(data, out, end_marker="END"))
    _write(data / "run7-000.h5", 0)  # one file before the start
    proc = spawn([MPIRUN, "-n", "2", LCLSTREAMER, "-c", "cfg.yaml", "--no-progress"], cwd=tmp_path)
    for k in range(1, 4):  # three more while it runs
        time.sleep(0.4)
        _write(data / f"run7-{k:03d}.h5", k * ROWS)
    (data / "END").touch()
    assert proc.wait(120) == 0, proc.stderr()
    assert _streamed(out) == list(range(4 * ROWS))
    assert "hdf5 watch: run ends (end marker found): 4 files, 20 events" in proc.stderr()
    summary = __import__("json").loads(proc.stdout().strip().splitlines()[-1])
    assert summary["events"] == 20 and summary["counters"]["hdf5_watch.files"] == 4


@pytest.mark.mpi
def test_idle_timeout_ends_the_run(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    for k in range(2):
        _write(data / f"run7-{k:03d}.h5", k * ROWS)
    write_config(tmp_path / "cfg.yaml", _config(data, out, idle_timeout=1.0))
    res = run_cli(["-c", "cfg.yaml", "--no-progress"], ranks=2, cwd=tmp_path)
    assert res.code == 0, res.stderr
    assert _streamed(out) == list(range(2 * ROWS))
    assert "run ends (no new file for 1.0 s): 2 files, 10 events" in res.stderr


def test_max_files_and_max_events_end_the_run(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    for k in range(3):
        _write(data / f"run7-{k:03d}.h5", k * ROWS)
    write_config(tmp_path / "cfg.yaml", _config(data, out, max_files=2))
    res = run_cli(["-c", "cfg.yaml", "--no-progress"], cwd=tmp_path)
    assert res.code == 0, res.stderr
    assert _streamed(out) == list(range(2 * ROWS))
    assert "run ends (2 files streamed)" in res.stderr
    for f in out.glob("*.h5"):
        f.unlink()
    write_config(tmp_path / "cfg.yaml", _config(data, out, idle_timeout=30))
    res = run_cli(["-c", "cfg.yaml", "--no-progress", "-n", "7"], cwd=tmp_path)
    assert res.code == 0, res.stderr
    assert _streamed(out) == list(range(7))
    assert "run ends (--max-events reached)" in res.stderr


def test_watch_config_errors(tmp_path):
    data = tmp_path / "data"
    cfg = _config(data, tmp_path / "out", idle_timeout=1)
    del cfg["event_source"]["watch"]["idle_timeout"]
    write_config(tmp_path / "cfg.yaml", cfg)
    res = run_cli(["-c", "cfg.yaml", "--validate"], cwd=tmp_path)
    assert res.code == 2 and "give at least one end condition" in res.stderr
    cfg = _config(data, tmp_path / "out", idle_timeout=1)
    write_config(tmp_path / "cfg.yaml", cfg)
    res = run_cli(["-c", "cfg.yaml", "--no-progress"], cwd=tmp_path)
    assert res.code == 1 and f"hdf5 watch: directory {data} does not exist" in res.stderr


def test_watcher_takes_settled_files_in_name_order_and_counts_late_ones(capsys):
    w = Watcher(settle=1.0, max_files=None, idle_timeout=5.0, started=0.0)
    scan = {"d/b.h5": (10, 1.0), "d/c.h5": (10, 1.0)}
    assert w.step(0.0, scan) == []  # first sight
    assert w.step(0.5, scan) == []  # not settled yet
    scan["d/b.h5"] = (20, 2.0)  # b still growing: c must wait too (order)
    assert w.step(1.2, scan) == []
    assert w.step(2.5, scan) == ["d/b.h5", "d/c.h5"]
    w.taken += ["d/b.h5", "d/c.h5"]
    w.last_new = 2.5
    scan["d/a.h5"] = (5, 3.0)  # sorts before what was streamed: late
    assert w.step(3.0, scan) == []
    assert w.late == {"d/a.h5"} and not w.pending(scan)
    assert "d/a.h5 appeared after d/c.h5 was streamed" in capsys.readouterr().err
    assert w.ending(7.0, marker=False, pending=False) is None
    assert w.ending(7.5, marker=False, pending=False) == "no new file for 5.0 s"
    assert w.ending(3.0, marker=True, pending=True) is None
    assert w.ending(3.0, marker=True, pending=False) == "end marker found"
