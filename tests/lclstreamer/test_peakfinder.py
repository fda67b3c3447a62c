"""The peak_finder pipeline: scored against the injected peaks of synthetic frames and
against OM's own peakfinder8 (the compiled routine of the `ondamonitor` package)."""

from __future__ import annotations

import numpy as np
import pytest

from lclstreamer.errors import ConfigError, DataError
from lclstreamer.models import PeakFinderPipeline as PeakFinderConfig
from lclstreamer.models import SyntheticEventSource
from lclstreamer.pipelines.peakfinder import PeakFinder, PeakFinderPipeline, make_geometry
from lclstreamer.protocols import Event, StreamContext
from lclstreamer.sources.synthetic import SyntheticSource
from tests.support.ci import require_module

from .helpers import run_cli, write_config
from .science import match

pytestmark = [pytest.mark.timeout(120)]

SHAPE = [512, 512]


def _frames(n: int, peaks: int = 25, shape=SHAPE, seed: int = 11):
    cfg = SyntheticEventSource(
        type="synthetic",
        number_of_events=n,
        seed=seed,
        pool_size=0,
        detectors={"det": {"shape": shape, "peaks": peaks, "peak_intensity": 200.0}},
    )
    src = SyntheticSource(cfg, StreamContext(0, 1, ""))
    return [(src.frame("det", i), src.injected_peaks("det", i)) for i in range(n)]


def _cfg(**kw) -> PeakFinderConfig:
    return PeakFinderConfig(type="peak_finder", field="det", adc_threshold=20.0, **kw)


def _ours(frame: np.ndarray, cfg: PeakFinderConfig) -> np.ndarray:
    finder = PeakFinder(cfg, make_geometry(frame.shape, cfg.center, None, cfg))
    out = np.empty((cfg.max_peaks, 4), np.float32)
    n = finder(frame, out)
    assert np.isnan(out[n:]).all()
    return out[:n]


def test_recall_and_precision_against_injected_peaks():
    cfg = _cfg()
    tp = found_total = truth_total = matched_found = 0
    for frame, truth in _frames(8):
        peaks = _ours(frame, cfg)
        ss_fs = peaks[:, [1, 0]].astype(float)
        t, f = match(ss_fs, truth.astype(float))
        tp += t
        matched_found += f
        truth_total += len(truth)
        found_total += len(peaks)
    recall, precision = tp / truth_total, matched_found / found_total
    print(f"peak_finder: recall {recall:.3f}, precision {precision:.3f} ({truth_total} peaks)")
    assert recall >= 0.95 and precision >= 0.95


def test_panels_are_searched_separately_and_positions_stack_along_ss():
    frame, truth = _frames(1, peaks=16, shape=[2, 128, 160])[0]
    peaks = _ours(frame, _cfg())
    stacked_truth = np.c_[truth[:, 0] * 128 + truth[:, 1], truth[:, 2]].astype(float)
    t, f = match(peaks[:, [1, 0]].astype(float), stacked_truth)
    assert t >= 0.9 * len(truth) and f >= 0.95 * len(peaks)


def om_peakfinder8(frame: np.ndarray, cfg: PeakFinderConfig) -> np.ndarray:
    """OM's compiled peakfinder8 with the arguments OM's Peakfinder8PeakDetection passes
    (its Python wrapper is not importable with numpy 2: it names `numpy.float_`)."""
    from om.algorithms._crystallography import peakfinder_8

    ss, fs = frame.shape
    yy, xx = np.mgrid[0:ss, 0:fs]
    radius = np.hypot(yy - (ss - 1) / 2, xx - (fs - 1) / 2).astype(np.float32)
    mask = np.ones((ss, fs), np.int8)
    mask[radius < cfg.min_res] = 0
    mask[radius > cfg.max_res] = 0
    out = peakfinder_8(
        cfg.max_peaks,
        frame.astype(np.float32),
        mask,
        radius,
        0,
        None,
        None,
        0,
        fs,
        ss,
        1,
        1,
        cfg.adc_threshold,
        cfg.minimum_snr,
        cfg.min_pixel_count,
        cfg.max_pixel_count,
        cfg.local_bg_radius,
    )
    return np.array([out[0], out[1]], dtype=float).T.reshape(-1, 2)  # fs, ss


def test_agreement_with_om_peakfinder8():
    require_module("om.algorithms._crystallography", "ondamonitor")
    cfg = _cfg()
    ours_matched = ours_total = om_matched = om_total = 0
    for frame, _ in _frames(8, seed=5):
        ours = _ours(frame, cfg)[:, :2].astype(float)
        theirs = om_peakfinder8(frame, cfg)
        a, b = match(ours, theirs)  # a: OM peaks near ours; b: our peaks near OM's
        om_matched += a
        ours_matched += b
        om_total += len(theirs)
        ours_total += len(ours)
    ours_in_om, om_in_ours = ours_matched / ours_total, om_matched / om_total
    print(
        f"agreement with OM peakfinder8: {ours_in_om:.3f} of our {ours_total} peaks,"
        f" {om_in_ours:.3f} of OM's {om_total}"
    )
    assert ours_in_om >= 0.9 and om_in_ours >= 0.9


def _events(frames):
    return iter(Event(i, {"det": f}) for i, f in enumerate(frames))


def test_hits_only_drops_and_counts_non_hits():
    frames = [f for f, _ in _frames(3)]
    blank = np.full(SHAPE, 2.0, np.float32)
    pipe = PeakFinderPipeline(_cfg(hits_only=True, min_peaks=10, batch_size=2), None)
    batches = list(pipe(_events([frames[0], blank, frames[1], blank, frames[2]])))
    assert [b.n_events for b in batches] == [2, 1]
    assert [b.first_event for b in batches] == [0, 4]
    assert pipe.counters() == {
        "peak_finder.frames": 5,
        "peak_finder.hits": 3,
        "peak_finder.non_hits_dropped": 2,
    }


def test_every_event_keeps_its_own_peak_table_within_a_batch():
    frames = [f for f, _ in _frames(4)]
    pipe = PeakFinderPipeline(_cfg(batch_size=4), None)
    (batch,) = list(pipe(_events(frames)))
    tables = batch.array("peaks")
    counts = batch.array("n_peaks")
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(tables[i], _ours_table(frame))
        assert counts[i] == np.count_nonzero(~np.isnan(tables[i, :, 0]))
    assert batch.array("is_hit").tolist() == [1, 1, 1, 1]


def _ours_table(frame):
    cfg = _cfg()
    out = np.empty((cfg.max_peaks, 4), np.float32)
    PeakFinder(cfg, make_geometry(frame.shape, None, None, cfg))(frame, out)
    return out


def test_bad_pixel_mask_removes_peaks_and_wrong_shape_is_an_error(tmp_path):
    frame, truth = _frames(1)[0]
    mask = np.ones(SHAPE, np.uint8)
    r, c = truth[0]
    mask[max(r - 4, 0) : r + 5, max(c - 4, 0) : c + 5] = 0
    np.save(tmp_path / "mask.npy", mask)
    pipe = PeakFinderPipeline(_cfg(bad_pixel_mask=str(tmp_path / "mask.npy")), None)
    (batch,) = list(pipe(_events([frame])))
    peaks = batch.array("peaks")[0]
    peaks = peaks[~np.isnan(peaks[:, 0])]
    assert not (np.hypot(peaks[:, 1] - r, peaks[:, 0] - c) < 3).any()
    np.save(tmp_path / "small.npy", np.ones((4, 4)))
    pipe = PeakFinderPipeline(_cfg(bad_pixel_mask=str(tmp_path / "small.npy")), None)
    with pytest.raises(ConfigError, match=r"bad_pixel_mask has shape \(4, 4\), frames have"):
        list(pipe(_events([frame])))
    with pytest.raises(ConfigError, match="cannot read bad_pixel_mask"):
        PeakFinderPipeline(_cfg(bad_pixel_mask=str(tmp_path / "missing.npy")), None)


def test_one_dimensional_frames_and_shape_changes_are_errors():
    with pytest.raises(DataError, match="2 or more dimensions"):
        list(PeakFinderPipeline(_cfg(), None)(_events([np.zeros(10, np.float32)])))
    frames = [np.zeros((32, 32), np.float32), np.zeros((32, 40), np.float32)]
    with pytest.raises(DataError, match=r"event 1 has a frame of shape \(32, 40\)"):
        list(PeakFinderPipeline(_cfg(), None)(_events(frames)))


def test_cli_summary_counts_dropped_non_hits(tmp_path):
    cfg = {
        "event_source": {
            "type": "synthetic",
            "number_of_events": 6,
            "detectors": {"det": {"shape": [128, 128], "peaks": 5, "peak_intensity": 200.0}},
        },
        "data_sources": {"det": {"type": "detector", "source": "det"}},
        "processing_pipeline": {
            "type": "peak_finder",
            "field": "det",
            "min_peaks": 50,
            "hits_only": True,
            "adc_threshold": 20.0,
        },
        "data_serializer": {"type": "msgpack", "fields": {"n_peaks": "n_peaks"}},
        "data_handlers": [{"type": "null"}],
    }
    write_config(tmp_path / "cfg.yaml", cfg)
    res = run_cli(["-c", "cfg.yaml", "--no-progress"], cwd=tmp_path)
    assert res.code == 0, res.stderr
    summary = res.summary()
    assert summary["events"] == 0
    assert summary["counters"]["peak_finder.non_hits_dropped"] == 6


def test_config_errors_name_the_field(tmp_path):
    cfg = {
        "event_source": {"type": "synthetic", "number_of_events": 2},
        "data_sources": {"img": {"type": "detector", "source": "epix10k2M"}},
        "processing_pipeline": {"type": "peak_finder", "field": "image"},
        "data_serializer": {"type": "msgpack", "fields": {"img": "data", "peak": "peak_list"}},
        "data_handlers": [{"type": "null"}],
    }
    write_config(tmp_path / "cfg.yaml", cfg)
    res = run_cli(["-c", "cfg.yaml", "--validate"], cwd=tmp_path)
    assert res.code == 2
    assert "processing_pipeline.field" in res.stderr
    assert "'image' is not in data_sources" in res.stderr
    assert "data_serializer.fields.peak" in res.stderr
    assert "nor made by the peak_finder pipeline" in res.stderr
