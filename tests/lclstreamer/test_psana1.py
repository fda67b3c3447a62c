"""psana1 adapter, tested against a STAND-IN psana module written by these tests onto
PYTHONPATH: psana1 (LCLS-I) cannot be installed here. The stand-in implements only the
parts of psana1's API the adapter calls and checks the arguments it passes.

psana2 runs on the real library (test_psana2.py); one stand-in psana2 test below covers
the photon-energy (`ebeam`) and event-code (`timing`) accessors, detectors that psana's
xtcwriter does not write.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from .helpers import read_message, run_cli, write_config

pytestmark = [pytest.mark.timeout(120)]

FAKE_PSANA1 = '''
"""FAKE psana (LCLS-I API subset) for lclstreamer tests. Not the real psana."""
import numpy as np

N = 7


class EventId:
    pass


class _Id:
    def __init__(self, i):
        self.i = i

    def time(self):
        return (1_500_000_000 + self.i, 1000 * self.i)


class _Evt:
    def __init__(self, i):
        self.i = i

    def get(self, kind):
        return _Id(self.i) if kind is EventId else None


class _Run:
    def times(self):
        return [("t", i) for i in range(N)]

    def event(self, t):
        return _Evt(t[1])


class DataSource:
    def __init__(self, spec):
        assert spec in ("exp=xpptut15:run=54:smd", "exp=xpptut15:run=54:idx"), spec

    def events(self):
        return (_Evt(i) for i in range(N))

    def runs(self):
        yield _Run()


class _Beam:
    def __init__(self, e):
        self.e = e

    def ebeamPhotonEnergy(self):
        return self.e


class Detector:
    def __init__(self, name):
        if name not in ("cspad", "EBeam", "evr0", "DET:PV"):
            raise KeyError(name)

    def calib(self, evt):  # calibration missing for event 3
        return None if evt.i == 3 else np.full((2, 5), evt.i, np.float32)

    def raw(self, evt):
        return np.full((2, 5), evt.i, np.int16)

    def get(self, evt):
        return _Beam(8000.0 + evt.i)

    def eventCodes(self, evt):
        return [40, 140] if evt.i % 2 == 0 else [41]

    def __call__(self, evt):
        return 0.5 * evt.i
'''

FAKE_PSANA2 = '''
"""FAKE psana (LCLS-II psana2 API subset) for lclstreamer tests. Not the real psana."""
import numpy as np

N = 9


class _Evt:
    def __init__(self, i):
        self.i = i
        self.timestamp = (1_700_000_000 + i) << 32 | 7 * i


class _Raw:
    def calib(self, evt):
        return np.full((3, 4), evt.i, np.float32)

    def image(self, evt):
        return np.full((6, 4), evt.i, np.float32)

    def ebeamPhotonEnergy(self, evt):
        return 7000.0 + evt.i

    def eventcodes(self, evt):
        flags = np.zeros(256, np.uint8)
        flags[[0, 1, 44]] = 1
        return flags


class _Det:
    raw = _Raw()


class _Run:
    expt = "tmoc00118"
    runnum = 123
    timestamp = 1_700_000_000 << 32

    def Detector(self, name):
        if name not in ("epix", "ebeam", "timing"):
            raise KeyError(name)
        return _Det()

    def events(self):
        return (_Evt(i) for i in range(N))


class DataSource:
    def __init__(self, files, skip_calib_load):
        assert files.endswith("run123.xtc2") and skip_calib_load == "all", files

    def runs(self):
        yield _Run()
'''


def _config(out, source: dict, detector: dict, extra: dict) -> dict:
    data_sources = {
        "frames": {"type": "detector", **detector},
        "index": {"type": "event_index"},
        "timestamp": {"type": "timestamp"},
        "energy": {"type": "photon_energy"},
        "codes": {"type": "event_codes"},
        **extra,
    }
    return {
        "source_identifier": "fake-psana",
        "skip_incomplete_events": True,
        "event_source": source,
        "data_sources": data_sources,
        "processing_pipeline": {"type": "batch", "batch_size": 2},
        "data_serializer": {"type": "hdf5", "fields": {k: f"/{k}" for k in data_sources}},
        "data_handlers": [{"type": "file", "directory": str(out)}],
    }


def _messages(out):
    return [read_message(p) for p in sorted(out.glob("*.h5"))]


@pytest.mark.mpi
@pytest.mark.parametrize("mode", ["smd", "idx"])
def test_psana1_adapter_two_ranks(tmp_path, mode):
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "psana.py").write_text(textwrap.dedent(FAKE_PSANA1))
    out = tmp_path / "out"
    cfg = _config(
        out,
        {"type": "psana1", "experiment": "xpptut15", "run": 54, "mode": mode},
        {"source": "cspad", "kind": "calib"},
        {
            "raw": {"type": "detector", "source": "cspad", "kind": "raw"},
            "pv": {"type": "scalar", "source": "DET:PV"},
        },
    )
    res = run_cli(
        ["-c", str(write_config(tmp_path / "c.yaml", cfg)), "--no-progress"],
        ranks=2,
        env={"PYTHONPATH": str(tmp_path / "fake")},
    )
    assert res.code == 0, res.stderr
    assert res.summary()["skipped"] == 1 and res.summary()["events"] == 6
    seen = []
    for m in _messages(out):
        idx = m["/index"]
        assert np.all(idx % 2 == m["attrs"]["rank"])
        assert np.array_equal(m["/frames"][:, 0, 0], idx.astype(np.float32))
        assert m["/raw"].dtype == np.int16 and np.array_equal(m["/raw"][:, 1, 4], idx)
        assert np.array_equal(m["/pv"], 0.5 * idx)
        assert np.array_equal(m["/energy"], 8000.0 + idx)
        expect_ts = ((1_500_000_000 + idx) << 32) | (1000 * idx)
        assert np.array_equal(m["/timestamp"], expect_ts.astype(np.uint64))
        for row, i in zip(m["/codes"], idx, strict=True):
            assert set(np.flatnonzero(row)) == ({40, 140} if i % 2 == 0 else {41})
        seen.extend(int(i) for i in idx)
    assert sorted(seen) == [0, 1, 2, 4, 5, 6]


def test_psana2_ebeam_and_timing_accessors_on_a_stand_in(tmp_path):
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "psana.py").write_text(textwrap.dedent(FAKE_PSANA2))
    (tmp_path / "run123.xtc2").write_bytes(b"")  # the stand-in reads nothing from it
    out = tmp_path / "out"
    source = {"type": "psana2", "files": str(tmp_path / "run123.xtc2")}
    cfg = _config(out, source, {"source": "epix", "kind": "image"}, {})
    res = run_cli(
        ["-c", str(write_config(tmp_path / "c.yaml", cfg)), "-n", "5", "--no-progress"],
        env={"PYTHONPATH": str(tmp_path / "fake")},
    )
    assert res.code == 0, res.stderr
    msgs = _messages(out)
    idx = np.concatenate([m["/index"] for m in msgs])
    assert idx.tolist() == [0, 1, 2, 3, 4]
    frames = np.concatenate([m["/frames"] for m in msgs])
    assert frames.shape == (5, 6, 4) and np.array_equal(frames[:, 5, 3], idx)
    stamps = np.concatenate([m["/timestamp"] for m in msgs])
    assert stamps.tolist() == [(1_700_000_000 + i) << 32 | 7 * i for i in range(5)]
    codes = np.concatenate([m["/codes"] for m in msgs])
    assert all(set(np.flatnonzero(row)) == {0, 1, 44} for row in codes)


def test_psana_absent_is_a_clear_error(tmp_path):
    """A psana that fails to import (shadowed here by a package raising ImportError)."""
    (tmp_path / "shadow" / "psana").mkdir(parents=True)
    (tmp_path / "shadow" / "psana" / "__init__.py").write_text("raise ImportError('no psana')")
    cfg = _config(
        tmp_path / "out",
        {"type": "psana1", "experiment": "xpptut15", "run": 54},
        {"source": "cspad"},
        {},
    )
    res = run_cli(
        ["-c", str(write_config(tmp_path / "c.yaml", cfg))],
        env={"PYTHONPATH": str(tmp_path / "shadow")},
    )
    assert res.code == 1 and "Traceback" not in res.stderr
    assert "the psana1 event source needs the psana package" in res.stderr


def test_psana1_source_refuses_psana2(tmp_path):
    """The real psana wheel is psana2: the psana1 source says so instead of misusing it."""
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "psana.py").write_text(textwrap.dedent(FAKE_PSANA2))
    cfg = _config(
        tmp_path / "out",
        {"type": "psana1", "experiment": "xpptut15", "run": 54},
        {"source": "cspad"},
        {},
    )
    res = run_cli(
        ["-c", str(write_config(tmp_path / "c.yaml", cfg))],
        env={"PYTHONPATH": str(tmp_path / "fake")},
    )
    assert res.code == 1 and "Traceback" not in res.stderr
    assert "needs psana1, but the psana installed here" in res.stderr
    assert "is psana2 (LCLS-II)" in res.stderr
