"""The `tof` pipeline: electron time-of-flight reduction of digitizer waveforms.

Per event (N channels x M samples): the baseline of each channel is the median of its
first `baseline_samples`; a pulse starts where the signal rises above `threshold`; its
window is `pre_samples` before to `post_samples` after that crossing; its arrival time is
the position of the window's maximum refined by a parabola through the maximum and its
two neighbours (sub-sample). Histograms of arrival times per channel are summed over
`histogram_every` events of the rank. Every stage's bytes are counted, whatever is sent.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import DataError
from ..models import TofPipeline as TofConfig
from ..protocols import Batch, Event, StreamContext
from . import batched


def crossings(signal: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(channel, sample) of every rising crossing of `threshold`, by channel then time."""
    above = signal > threshold
    rising = above[:, 1:] & ~above[:, :-1]
    ch, t = np.nonzero(rising)
    return ch, t + 1


def arrival_times(signal: np.ndarray, ch: np.ndarray, t: np.ndarray, span: int) -> np.ndarray:
    """Sub-sample time of the maximum within `span` samples from each crossing."""
    m = signal.shape[1]
    idx = np.minimum(t[:, None] + np.arange(span)[None, :], m - 1)
    seg = signal[ch[:, None], idx]
    peak = np.minimum(t + np.argmax(seg, axis=1), m - 2)
    peak = np.maximum(peak, 1)
    y0 = signal[ch, peak - 1]
    y1 = signal[ch, peak]
    y2 = signal[ch, peak + 1]
    den = y0 - 2 * y1 + y2
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = np.where(den < 0, 0.5 * (y0 - y2) / den, 0.0)
    return peak + np.clip(delta, -0.5, 0.5)


def add_to_histogram(
    hist: np.ndarray, ch: np.ndarray, times: np.ndarray, edges: np.ndarray
) -> None:
    """hist[c] += numpy.histogram(times of channel c, edges) for every channel at once
    (uniform bins, the last one closed like numpy's)."""
    bins = hist.shape[1]
    k = np.searchsorted(edges, times, side="right") - 1
    k[times == edges[-1]] = bins - 1
    ok = (k >= 0) & (k < bins)
    flat = np.bincount(ch[ok].astype(np.intp) * bins + k[ok], minlength=hist.size)
    hist += flat.reshape(hist.shape).astype(np.uint32)


class TofPipeline:
    """Reduces waveforms to the configured stage, then batches (see module docstring)."""

    def __init__(self, cfg: TofConfig, ctx: StreamContext | None) -> None:
        self.cfg = cfg
        self.count: dict[str, int] = {
            "tof.events": 0,
            "tof.raw_bytes": 0,
            "tof.window_bytes": 0,
            "tof.arrival_bytes": 0,
            "tof.histogram_bytes": 0,
            "tof.windows_dropped": 0,
            "tof.hits_dropped": 0,
        }

    def counters(self) -> dict[str, int]:
        return dict(self.count)

    def _reduce(self, events: Iterator[Event]) -> Iterator[Event]:
        cfg, count = self.cfg, self.count
        pre, post = cfg.pre_samples, cfg.post_samples
        width = pre + post
        slots = cfg.batch_size
        shape: tuple[int, ...] | None = None
        ring: list[dict[str, np.ndarray]] = []
        slot = 0
        hist = hist_first = hist_n = None
        edges = None
        for event in events:
            w = np.asarray(event.data[cfg.field])
            if shape is None:
                if w.ndim != 2 or w.shape[1] < width + 2:
                    raise DataError(
                        f"tof: {cfg.field!r} must be channels x samples with more than"
                        f" {width + 1} samples, got {w.shape}"
                    )
                shape = w.shape
                lo, hi = cfg.histogram_range or (0.0, float(shape[1]))
                edges = np.linspace(lo, hi, cfg.histogram_bins + 1)
                ring = [self._slot(w.dtype) for _ in range(slots)]
                hist = np.zeros((shape[0], cfg.histogram_bins), dtype=np.uint32)
                hist_first, hist_n = event.index, 0
            elif w.shape != shape:
                raise DataError(
                    f"tof: event {event.index} has waveforms of shape {w.shape},"
                    f" earlier events had {shape}"
                )
            base = np.median(w[:, : cfg.baseline_samples], axis=1)
            signal = w.astype(np.float32) - base[:, None].astype(np.float32)
            ch, t = crossings(signal, cfg.threshold)
            times = arrival_times(signal, ch, t, post)
            count["tof.events"] += 1
            count["tof.raw_bytes"] += w.nbytes
            count["tof.window_bytes"] += len(t) * (width * w.dtype.itemsize + 4 + 2)
            count["tof.arrival_bytes"] += len(t) * (4 + 2)
            assert hist is not None and edges is not None
            if len(times):
                add_to_histogram(hist, ch, times, edges)
            if hist_n == 0:
                hist_first = event.index
            hist_n += 1
            if cfg.output == "histograms":
                if hist_n == cfg.histogram_every:
                    yield self._histogram_record(hist_first, hist, hist_n, shape)
                    hist[:] = 0
                    hist_n = 0
                continue
            if hist_n == cfg.histogram_every:
                count["tof.histogram_bytes"] += hist.nbytes
                hist[:] = 0
                hist_n = 0
            out = ring[slot]
            slot = (slot + 1) % slots
            if cfg.output == "windows":
                self._windows(w, ch, t, out, event)
            elif cfg.output == "arrivals":
                self._arrivals(ch, times, out, event)
            yield event
        if cfg.output == "histograms" and hist_n and shape is not None and hist is not None:
            yield self._histogram_record(hist_first, hist, hist_n, shape)
        elif hist_n and hist is not None:
            count["tof.histogram_bytes"] += hist.nbytes

    def _slot(self, dtype: np.dtype) -> dict[str, np.ndarray]:
        cfg = self.cfg
        return {
            "tof_windows": np.zeros((cfg.max_windows, cfg.pre_samples + cfg.post_samples), dtype),
            "tof_window_start": np.full(cfg.max_windows, -1, np.int32),
            "tof_window_channel": np.full(cfg.max_windows, -1, np.int16),
            "tof_times": np.full(cfg.max_hits, np.nan, np.float32),
            "tof_channels": np.full(cfg.max_hits, -1, np.int16),
        }

    def _windows(self, w, ch, t, out, event: Event) -> None:
        cfg = self.cfg
        width = cfg.pre_samples + cfg.post_samples
        n = min(len(t), cfg.max_windows)
        self.count["tof.windows_dropped"] += len(t) - n
        start = np.clip(t[:n] - cfg.pre_samples, 0, w.shape[1] - width)
        win, st, wc = out["tof_windows"], out["tof_window_start"], out["tof_window_channel"]
        win[n:] = 0
        st[n:] = -1
        wc[n:] = -1
        if n:
            win[:n] = w[ch[:n, None], start[:, None] + np.arange(width)[None, :]]
            st[:n] = start
            wc[:n] = ch[:n]
        del event.data[cfg.field]
        event.data.update(
            tof_windows=win, tof_window_start=st, tof_window_channel=wc, tof_n_windows=np.int32(n)
        )

    def _arrivals(self, ch, times, out, event: Event) -> None:
        cfg = self.cfg
        n = min(len(times), cfg.max_hits)
        self.count["tof.hits_dropped"] += len(times) - n
        tt, cc = out["tof_times"], out["tof_channels"]
        tt[n:] = np.nan
        cc[n:] = -1
        tt[:n] = times[:n]
        cc[:n] = ch[:n]
        del event.data[cfg.field]
        event.data.update(tof_times=tt, tof_channels=cc, tof_n_hits=np.int32(n))

    def _histogram_record(self, first, hist, n, shape) -> Event:
        self.count["tof.histogram_bytes"] += hist.nbytes
        data = {
            "tof_histogram": hist.copy(),  # one per K events: not on the per-event path
            "tof_first_event": np.int64(first),
            "tof_n_events": np.int32(n),
        }
        return Event(int(first), data)

    def __call__(self, events: Iterator[Event]) -> Iterator[Batch]:
        return batched(self._reduce(events), self.cfg.batch_size)
