"""The tof pipeline on the synthetic TMO digitizer: arrival times against the injected
electrons, windows against the raw samples, histograms against numpy's histogram of the
truth, bytes per stage in the run summary (2 ranks)."""

from __future__ import annotations

import numpy as np
import pytest

from lclstreamer.errors import DataError
from lclstreamer.models import SyntheticTofEventSource
from lclstreamer.models import TofPipeline as TofConfig
from lclstreamer.pipelines.tof import TofPipeline
from lclstreamer.protocols import Event, StreamContext
from lclstreamer.sources.tof import SyntheticTofSource

from .helpers import read_message, run_cli, write_config
from .science import example

pytestmark = [pytest.mark.timeout(180)]


def _source(n: int, **kw) -> SyntheticTofSource:
    cfg = SyntheticTofEventSource(type="synthetic_tof", number_of_events=n, seed=4, **kw)
    return SyntheticTofSource(cfg, StreamContext(0, 1, ""))


def _run(src: SyntheticTofSource, **kw):
    pipe = TofPipeline(TofConfig(type="tof", field="w", threshold=200.0, **kw), None)
    events = (Event(e.index, {"w": src.waveforms(e.index)}) for e in src.events())
    return pipe, pipe(events)


def test_arrival_times_within_one_sample_of_the_injected_electrons():
    src = _source(60, pulses_per_channel=5.0)
    pipe, batches = _run(src, batch_size=16)
    matched = injected = found = 0
    for batch in batches:
        times, chans, hits = (batch.array(k) for k in ("tof_times", "tof_channels", "tof_n_hits"))
        for k, i in enumerate(batch.indices):
            ch, t = src.truth(i)
            n = int(hits[k])
            found += n
            assert np.isnan(times[k, n:]).all() and (chans[k, n:] == -1).all()
            for c, x in zip(ch, t, strict=True):
                injected += 1
                mine = times[k, :n][chans[k, :n] == c]
                matched += bool(mine.size) and float(np.abs(mine - x).min()) <= 1.0
    print(f"tof: {matched} of {injected} electrons within one sample; {found} found")
    assert matched >= 0.99 * injected
    assert found <= 1.01 * injected
    assert pipe.counters()["tof.hits_dropped"] == 0


def test_windows_are_the_raw_samples_around_each_crossing():
    src = _source(5)
    pipe, batches = _run(src, output="windows", batch_size=5, pre_samples=3, post_samples=9)
    (batch,) = list(batches)
    for k, i in enumerate(batch.indices):
        raw = src.waveforms(i)
        n = int(batch.array("tof_n_windows")[k])
        assert n == len(src.truth(i)[0])
        for j in range(n):
            c = batch.array("tof_window_channel")[k, j]
            s = batch.array("tof_window_start")[k, j]
            np.testing.assert_array_equal(batch.array("tof_windows")[k, j], raw[c, s : s + 12])
            assert raw[c, s + 3] - np.median(raw[c, :64]) > 200  # the crossing, 3 samples in


def test_too_many_hits_are_counted_not_lost_silently():
    src = _source(3, pulses_per_channel=8.0)
    pipe, batches = _run(src, max_hits=4, batch_size=3)
    (batch,) = list(batches)
    total = sum(len(src.truth(i)[0]) for i in batch.indices)
    assert batch.array("tof_n_hits").tolist() == [4, 4, 4]
    assert pipe.counters()["tof.hits_dropped"] == total - 12


def test_bad_waveforms_are_clear_errors():
    pipe = TofPipeline(TofConfig(type="tof", field="w", threshold=1.0), None)
    with pytest.raises(DataError, match=r"'w' must be channels x samples"):
        list(pipe(iter([Event(0, {"w": np.zeros(100)})])))
    pipe = TofPipeline(TofConfig(type="tof", field="w", threshold=1.0), None)
    events = [Event(0, {"w": np.zeros((2, 100))}), Event(1, {"w": np.zeros((3, 100))})]
    with pytest.raises(DataError, match=r"event 1 has waveforms of shape \(3, 100\)"):
        list(pipe(iter(events)))


@pytest.mark.mpi
def test_two_rank_histograms_equal_numpy_histograms_of_the_truth(tmp_path):
    """Arrival times on a quarter-sample grid, bin edges between grid points: a detection
    error under 1/8 sample keeps every electron in its true bin, so equality is exact."""
    n, every = 46, 10
    cfg = example("tmo-tof.yaml")
    src_cfg = cfg["event_source"]
    src_cfg.update(number_of_events=n, channels=4, samples=1024, time_step=0.25)
    cfg["processing_pipeline"].update(
        output="histograms",
        histogram_every=every,
        histogram_bins=64,
        histogram_range=[0.125, 1024.125],
        batch_size=2,
    )
    cfg["data_serializer"]["fields"] = {
        "tof_histogram": "/tof/histogram",
        "tof_first_event": "/tof/first_event",
        "tof_n_events": "/tof/n_events",
    }
    cfg["data_handlers"] = [{"type": "file", "directory": str(tmp_path / "out"), "prefix": "t"}]
    write_config(tmp_path / "cfg.yaml", cfg)
    res = run_cli(["-c", "cfg.yaml", "--no-progress"], ranks=2, cwd=tmp_path)
    assert res.code == 0, res.stderr
    src = SyntheticTofSource(SyntheticTofEventSource(**src_cfg), StreamContext(0, 1, ""))
    edges = np.linspace(0.125, 1024.125, 65)
    covered = []
    for path in sorted((tmp_path / "out").glob("*.h5")):
        msg = read_message(path)
        for hist, first, count in zip(
            msg["/tof/histogram"], msg["/tof/first_event"], msg["/tof/n_events"], strict=True
        ):
            indices = [int(first) + 2 * k for k in range(int(count))]  # this rank's events
            covered += indices
            truth = np.zeros((4, 64), dtype=np.int64)
            for i in indices:
                ch, t = src.truth(i)
                for c in range(4):
                    truth[c] += np.histogram(t[ch == c], edges)[0]
            np.testing.assert_array_equal(hist, truth)
    assert sorted(covered) == list(range(n))  # records of 10, 10 and a last one of 3
    summary = res.summary()
    assert summary["counters"]["tof.events"] == n
    assert summary["counters"]["tof.histogram_bytes"] == 6 * 4 * 64 * 4


@pytest.mark.mpi
def test_example_reports_bytes_per_stage(tmp_path):
    cfg = example("tmo-tof.yaml")
    cfg["event_source"]["number_of_events"] = 40
    cfg["data_handlers"] = [{"type": "file", "directory": str(tmp_path / "out"), "prefix": "t"}]
    write_config(tmp_path / "cfg.yaml", cfg)
    res = run_cli(["-c", "cfg.yaml", "--no-progress"], ranks=2, cwd=tmp_path)
    assert res.code == 0, res.stderr
    c = res.summary()["counters"]
    print({k: v for k, v in c.items() if k.endswith("bytes")})
    assert c["tof.raw_bytes"] == 40 * 16 * 4096 * 2
    assert c["tof.raw_bytes"] > c["tof.window_bytes"] > c["tof.arrival_bytes"] > 0
    files = sorted((tmp_path / "out").glob("*.h5"))
    hits = sum(int(read_message(f)["/tof/n_hits"].sum()) for f in files)
    assert c["tof.arrival_bytes"] == hits * 6
