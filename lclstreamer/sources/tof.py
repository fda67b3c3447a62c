"""The `synthetic_tof` event source: TMO-like digitizer waveforms with known electrons."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..models import SyntheticTofEventSource
from ..partition import limit, rank_indices
from ..protocols import RunInfo, StreamContext
from .frames import timestamp


def pulse_times(
    rng: np.random.Generator, cfg: SyntheticTofEventSource
) -> tuple[np.ndarray, np.ndarray]:
    """(channel, arrival time in samples) of every injected electron, sorted by channel
    then time; pulses of a channel are at least `min_separation` apart and keep clear of
    the baseline window and the record's end."""
    margin = 64 + 6 * cfg.pulse_sigma  # the pipeline's default baseline window stays clean
    lo, hi = margin, cfg.samples - 6 * cfg.pulse_sigma - 1
    channels, times = [], []
    for c in range(cfg.channels):
        k = int(rng.poisson(cfg.pulses_per_channel))
        t = np.sort(rng.uniform(lo, hi, size=k))
        if cfg.time_step:
            t = np.round(t / cfg.time_step) * cfg.time_step
        kept: list[float] = []
        for x in t:
            if not kept or x - kept[-1] >= cfg.min_separation:
                kept.append(float(x))
        channels += [c] * len(kept)
        times += kept
    return np.array(channels, dtype=np.int16), np.array(times, dtype=np.float64)


def make_waveforms(
    rng: np.random.Generator, cfg: SyntheticTofEventSource, channels: np.ndarray, times: np.ndarray
) -> np.ndarray:
    """N x M samples: baseline + Gaussian noise + one Gaussian pulse per electron."""
    w = cfg.baseline + cfg.noise * rng.standard_normal((cfg.channels, cfg.samples))
    half = int(np.ceil(6 * cfg.pulse_sigma))
    for c, t in zip(channels, times, strict=True):
        i0, i1 = max(0, int(t) - half), min(cfg.samples, int(t) + half + 2)
        x = np.arange(i0, i1)
        w[c, i0:i1] += cfg.pulse_amplitude * np.exp(-0.5 * ((x - t) / cfg.pulse_sigma) ** 2)
    if cfg.dtype != "float32":
        info = np.iinfo(cfg.dtype)
        np.clip(np.rint(w, out=w), info.min, info.max, out=w)
    return w.astype(cfg.dtype)


class TofEvent:
    """One digitizer readout; its waveforms are made when first asked for."""

    __slots__ = ("index", "_source")

    def __init__(self, index: int, source: SyntheticTofSource) -> None:
        self.index = index
        self._source = source

    def detector(self, name: str, kind: str) -> np.ndarray | None:
        if name != self._source.cfg.detector:
            return None
        return self._source.waveforms(self.index)

    def scalar(self, name: str) -> None:
        return None

    def timestamp(self) -> int:
        cfg = self._source.cfg
        return timestamp(cfg.start_time, cfg.event_rate_hz, self.index)

    def photon_energy_ev(self) -> float:
        return self._source.cfg.photon_energy_ev

    def event_codes(self) -> None:
        return None


class SyntheticTofSource:
    """Events `rank, rank + size, ...`; each depends only on (seed, event index)."""

    def __init__(self, cfg: SyntheticTofEventSource, ctx: StreamContext) -> None:
        self.cfg = cfg
        self.ctx = ctx

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, index])

    def truth(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(channels, arrival times in samples) injected into event `index`."""
        return pulse_times(self._rng(index), self.cfg)

    def waveforms(self, index: int) -> np.ndarray:
        rng = self._rng(index)
        channels, times = pulse_times(rng, self.cfg)
        w = make_waveforms(rng, self.cfg, channels, times)
        w.setflags(write=False)
        return w

    def run_info(self) -> RunInfo:
        return RunInfo(self.cfg.experiment, self.cfg.run)

    def events(self) -> Iterator[TofEvent]:
        n = limit(self.cfg.number_of_events, self.ctx.max_events)
        for index in rank_indices(n, self.ctx.rank, self.ctx.size):
            yield TofEvent(index, self)

    def close(self) -> None:
        return None
