"""The synthetic event source: deterministic simulated events from a seed."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from ..models import SyntheticEventSource
from ..partition import limit, rank_indices
from ..protocols import RunInfo, StreamContext
from .frames import make_frame, timestamp

_SCALARS = 1 << 30  # seed-sequence lane for per-event scalars, distinct from frames


class SyntheticEvent:
    """One simulated event; frames are shared read-only arrays, never copied."""

    __slots__ = ("index", "_source")

    def __init__(self, index: int, source: SyntheticSource) -> None:
        self.index = index
        self._source = source

    def detector(self, name: str, kind: str) -> np.ndarray | None:
        return self._source.frame(name, self.index)

    def scalar(self, name: str) -> None:
        return None

    def timestamp(self) -> int:
        cfg = self._source.cfg
        return timestamp(cfg.start_time, cfg.event_rate_hz, self.index)

    def photon_energy_ev(self) -> float:
        cfg = self._source.cfg
        if not cfg.photon_energy_jitter_ev:
            return cfg.photon_energy_ev
        rng = np.random.default_rng([cfg.seed, _SCALARS, self.index])
        return cfg.photon_energy_ev + cfg.photon_energy_jitter_ev * float(rng.standard_normal())

    def event_codes(self) -> np.ndarray:
        return self._source.codes_of(self.index)


class SyntheticSource:
    """Events `rank, rank + size, ...` of a simulated run.

    Frames depend only on (seed, detector, frame number), never on the rank
    count. With `pool_size > 0`, event i shows pool frame i % pool_size; a rank
    makes the pool frames it will show at start-up.
    """

    def __init__(self, cfg: SyntheticEventSource, ctx: StreamContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self._dets = {name: (k, det) for k, (name, det) in enumerate(cfg.detectors.items())}
        self._pool: dict[tuple[str, int], np.ndarray] = {}
        if cfg.pool_size:  # at start-up, only the pool frames this rank will show
            n = limit(cfg.number_of_events, ctx.max_events)
            period = cfg.pool_size * ctx.size  # the pattern of i % pool_size repeats
            needed = {i % cfg.pool_size for i in rank_indices(min(n, period), ctx.rank, ctx.size)}
            for name in cfg.detectors:
                for k in sorted(needed):
                    self._pool[name, k] = self._generate(name, k)
        self._codes = sorted(cfg.event_codes.items())

    def _generate(
        self, name: str, number: int, positions: list[tuple[int, ...]] | None = None
    ) -> np.ndarray:
        ordinal, det = self._dets[name]
        rng = np.random.default_rng([self.cfg.seed, ordinal, number])
        frame = make_frame(
            rng,
            tuple(det.shape),
            det.dtype,
            det.background,
            det.peaks,
            det.peak_intensity,
            det.peak_sigma,
            positions,
        )
        frame.setflags(write=False)
        return frame

    def injected_peaks(self, name: str, index: int) -> np.ndarray:
        """Centres of the spots injected into detector `name` in event `index`: an
        (peaks, ndim) int array of indices into the frame (for scoring peak finders)."""
        det = self._dets[name][1]
        number = index % self.cfg.pool_size if self.cfg.pool_size else index
        positions: list[tuple[int, ...]] = []
        self._generate(name, number, positions)
        return np.array(positions, dtype=np.int64).reshape(-1, len(det.shape))

    def frame(self, name: str, index: int) -> np.ndarray | None:
        """The frame of detector `name` in event `index` (None if it is missing there)."""
        entry = self._dets.get(name)
        if entry is None:
            return None
        every = entry[1].missing_every
        if every is not None and index % every == every - 1:
            return None
        size = self.cfg.pool_size
        if not size:
            return self._generate(name, index)
        return self._pool[name, index % size]

    def codes_of(self, index: int) -> np.ndarray:
        return np.array([c for c, period in self._codes if index % period == 0], dtype=np.uint8)

    def run_info(self) -> RunInfo:
        return RunInfo(self.cfg.experiment, self.cfg.run)

    def events(self) -> Iterator[SyntheticEvent]:
        n = limit(self.cfg.number_of_events, self.ctx.max_events)
        period = 1.0 / self.cfg.rate_limit_hz if self.cfg.rate_limit_hz else 0.0
        start = time.monotonic()
        for k, index in enumerate(rank_indices(n, self.ctx.rank, self.ctx.size)):
            if period:
                delay = start + k * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield SyntheticEvent(index, self)

    def close(self) -> None:
        self._pool.clear()
