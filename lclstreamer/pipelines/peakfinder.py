"""The `peak_finder` pipeline: peakfinder8-style Bragg peak finding (pure numpy/scipy).

Per frame: radial statistics of the background (mean and standard deviation per
integer radius, iteratively excluding pixels above `mean + minimum_snr * std`), pixels
above `max(adc_threshold, mean + minimum_snr * std)` of their radius grouped into
8-connected peaks, peaks kept when their pixel count is in range and they stand
`minimum_snr` local standard deviations above a local background (the pixels below
threshold in a box `local_bg_radius` around the peak). Positions are intensity-weighted
centroids in pixel-index units (fs, ss) of the frame with panels stacked along ss.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError
from ..models import PeakFinderPipeline as PeakFinderConfig
from ..protocols import Batch, Event, StreamContext
from . import batched


@dataclass
class Geometry:
    """Per-pixel tables for one frame shape (panels stacked along ss), made once."""

    panels: int
    ss: int
    fs: int
    rbin: np.ndarray  # int, integer radius of every pixel (flattened)
    nbins: int
    good: np.ndarray  # bool, usable for statistics
    in_res: np.ndarray  # bool, inside [min_res, max_res]


def make_geometry(
    shape: tuple[int, ...], center: list[float] | None, mask: np.ndarray | None, cfg
) -> Geometry:
    """Radius, resolution and bad-pixel tables for frames of `shape` (2-D or panels)."""
    if len(shape) < 2:
        raise DataError(f"peak_finder: a frame must have 2 or more dimensions, got {shape}")
    ss, fs = shape[-2], shape[-1]
    panels = int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) > 2 else 1
    cy, cx = center if center is not None else ((ss - 1) / 2, (fs - 1) / 2)
    yy, xx = np.mgrid[0:ss, 0:fs]
    radius = np.hypot(yy - cy, xx - cx)
    rbin = np.tile(radius.astype(np.int32).ravel(), panels)
    rad = np.tile(radius.ravel(), panels)
    good = np.ones(panels * ss * fs, dtype=bool)
    if mask is not None:
        if mask.shape != tuple(shape):
            raise ConfigError(
                f"peak_finder: bad_pixel_mask has shape {mask.shape}, frames have {tuple(shape)}"
            )
        good &= mask.ravel() != 0
    in_res = (rad >= cfg.min_res) & (rad <= cfg.max_res)
    return Geometry(panels, ss, fs, rbin, int(rbin.max()) + 1, good, in_res)


_SMALL_BIN = 64  # radial bins with fewer pixels are always examined pixel by pixel
_DENSE = 50_000  # more candidate pixels than this: label them with scipy (C), not in Python


class PeakFinder:
    """Finds peaks in frames of one shape; per-geometry tables are made once.

    Only pixels that can be above some threshold are ever visited individually: those
    at or above the lowest threshold of the well-populated radial bins, plus the few
    pixels of sparsely populated bins (near the centre). The result is the same as
    comparing every pixel with its radius' threshold.
    """

    def __init__(self, cfg: PeakFinderConfig, geom: Geometry) -> None:
        self.cfg = cfg
        self.geom = geom
        self._data = np.empty(geom.rbin.size, dtype=np.float32)
        self._masked = not bool(geom.good.all())
        self._search = geom.good & geom.in_res
        self._cnt = np.bincount(geom.rbin, geom.good, geom.nbins)
        self._big = self._cnt >= _SMALL_BIN
        self._small_pixels = np.flatnonzero(~self._big[geom.rbin] & geom.good)

    def _candidates(self, data: np.ndarray, thr: np.ndarray) -> np.ndarray:
        """Good pixels that might be at or above their bin's threshold (sorted)."""
        lo = float(thr[self._big].min()) if self._big.any() else -np.inf
        cand = np.flatnonzero(data >= lo)
        if self._masked:
            cand = cand[self.geom.good[cand]]
        return np.union1d(cand, self._small_pixels)

    def thresholds(self, data: np.ndarray) -> np.ndarray:
        """Per-radius threshold `mean + minimum_snr * std`, the statistics recomputed
        `iterations` times without the pixels above the previous threshold; at least
        `adc_threshold`."""
        g, cfg = self.geom, self.cfg
        good_data = np.where(g.good, data, 0.0) if self._masked else data
        s1_all = np.bincount(g.rbin, good_data, g.nbins)
        s2_all = np.bincount(g.rbin, np.square(good_data, dtype=np.float64), g.nbins)
        thr = np.full(g.nbins, np.inf)
        cand = np.empty(0, dtype=np.intp)
        cand_lo = np.inf
        for _ in range(cfg.iterations):
            lo = float(thr[self._big].min()) if self._big.any() else -np.inf
            if lo < cand_lo:  # thresholds dropped below what the candidates cover
                cand, cand_lo = self._candidates(data, thr), lo
            v = data[cand]
            rb = g.rbin[cand]
            over = v >= thr[rb]
            rb, v = rb[over], v[over].astype(np.float64)
            cnt = self._cnt - np.bincount(rb, minlength=g.nbins)
            s1 = s1_all - np.bincount(rb, v, g.nbins)
            s2 = s2_all - np.bincount(rb, v * v, g.nbins)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(cnt > 0, s1 / np.maximum(cnt, 1), 0.0)
                var = np.where(cnt > 0, s2 / np.maximum(cnt, 1), 0.0) - mean * mean
            new = mean + cfg.minimum_snr * np.sqrt(np.maximum(var, 0.0))
            if np.array_equal(new, thr):
                break
            thr = new
        return np.maximum(thr, cfg.adc_threshold)

    def _label(self, pix: np.ndarray) -> tuple[np.ndarray, int]:
        """Labels 1..n of the 8-connected groups (within a panel) of the sorted pixels."""
        g = self.geom
        if pix.size > _DENSE:
            from scipy import ndimage

            mask = np.zeros(g.rbin.size, dtype=bool)
            mask[pix] = True
            struct = np.zeros((3, 3, 3), dtype=bool)
            struct[1] = True
            labels, n = ndimage.label(mask.reshape(g.panels, g.ss, g.fs), structure=struct)
            return labels.reshape(-1)[pix], n
        fs, plane = g.fs, g.ss * g.fs
        where = {int(p): k for k, p in enumerate(pix)}
        labels = np.zeros(pix.size, dtype=np.int64)
        n = 0
        for k in range(pix.size):
            if labels[k]:
                continue
            n += 1
            labels[k] = n
            stack = [int(pix[k])]
            while stack:
                p = stack.pop()
                row, col = divmod(p % plane, fs)
                for dr in (-1, 0, 1):
                    r = row + dr
                    if r < 0 or r >= g.ss:
                        continue
                    for dc in (-1, 0, 1):
                        c = col + dc
                        if c < 0 or c >= fs or (dr == 0 and dc == 0):
                            continue
                        j = where.get(p + dr * fs + dc)
                        if j is not None and not labels[j]:
                            labels[j] = n
                            stack.append(p + dr * fs + dc)
        return labels, n

    def __call__(self, frame: np.ndarray, peaks: np.ndarray) -> int:
        """Find the peaks of one frame into `peaks` ((max_peaks, 4): fs, ss, intensity,
        pixel count; unused rows NaN); the number found."""
        g, cfg = self.geom, self.cfg
        data = self._data
        np.copyto(data, frame.reshape(-1), casting="unsafe")
        thr = self.thresholds(data)
        cand = self._candidates(data, thr)
        pix = cand[(data[cand] > thr[g.rbin[cand]]) & self._search[cand]]
        peaks.fill(np.nan)
        if pix.size == 0:
            return 0
        lab, n = self._label(pix)
        npix = np.bincount(lab, minlength=n + 1)
        keep = (npix >= cfg.min_pixel_count) & (npix <= cfg.max_pixel_count)
        keep[0] = False
        sel = keep[lab]
        nz, lab = pix[sel], lab[sel]
        if nz.size == 0:
            return 0
        order = np.argsort(lab, kind="stable")
        nz, lab = nz[order], lab[order]
        starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
        ends = np.r_[starts[1:], lab.size]
        plane = g.ss * g.fs
        ss_all = nz // g.fs  # row in the stacked frame
        fs_all = nz % g.fs
        vals = data[nz]
        above = np.zeros(g.rbin.size, dtype=bool)
        above[pix] = True
        found = 0
        r = cfg.local_bg_radius
        stacked = data.reshape(g.panels * g.ss, g.fs)
        above2 = above.reshape(g.panels * g.ss, g.fs)
        good2 = g.good.reshape(g.panels * g.ss, g.fs)
        for a, b in zip(starts, ends, strict=True):
            v = vals[a:b]
            top = a + int(np.argmax(v))
            row, col = int(ss_all[top]), int(fs_all[top])
            p0 = (int(nz[top]) // plane) * g.ss
            r0, r1 = max(p0, row - r), min(p0 + g.ss, row + r + 1)
            c0, c1 = max(0, col - r), min(g.fs, col + r + 1)
            bgsel = ~above2[r0:r1, c0:c1] & good2[r0:r1, c0:c1]
            if np.count_nonzero(bgsel) < 3:
                continue
            bg = stacked[r0:r1, c0:c1][bgsel]
            bg_mean, bg_std = float(bg.mean()), float(bg.std())
            signal = v - bg_mean
            total = float(signal.sum())
            if total <= 0 or float(v.max()) - bg_mean < cfg.minimum_snr * max(bg_std, 1e-12):
                continue
            if found == cfg.max_peaks:
                break
            wts = np.maximum(signal, 0)
            wsum = float(wts.sum())
            peaks[found] = (
                float((fs_all[a:b] * wts).sum()) / wsum,
                float((ss_all[a:b] * wts).sum()) / wsum,
                total,
                b - a,
            )
            found += 1
        return found


class PeakFinderPipeline:
    """Adds the peak list and hit flag to every event, drops non-hits with `hits_only`
    (counted as `peak_finder.non_hits_dropped`), then batches."""

    def __init__(self, cfg: PeakFinderConfig, ctx: StreamContext | None) -> None:
        self.cfg = cfg
        self.mask = None
        if cfg.bad_pixel_mask is not None:
            try:
                self.mask = np.load(cfg.bad_pixel_mask)
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"peak_finder: cannot read bad_pixel_mask {cfg.bad_pixel_mask}: {exc}"
                ) from None
        self.frames = 0
        self.hits = 0
        self.dropped = 0

    def counters(self) -> dict[str, int]:
        return {
            "peak_finder.frames": self.frames,
            "peak_finder.hits": self.hits,
            "peak_finder.non_hits_dropped": self.dropped,
        }

    def _annotate(self, events: Iterator[Event]) -> Iterator[Event]:
        cfg, p = self.cfg, self.cfg.output_prefix
        finder: PeakFinder | None = None
        shape: tuple[int, ...] | None = None
        # one peak table per batch slot: a batch is done with before the next event comes
        ring = [np.empty((cfg.max_peaks, 4), np.float32) for _ in range(cfg.batch_size)]
        slot = 0
        for event in events:
            frame = np.asarray(event.data[cfg.field])
            if finder is None:
                shape = frame.shape
                finder = PeakFinder(cfg, make_geometry(shape, cfg.center, self.mask, cfg))
            elif frame.shape != shape:
                raise DataError(
                    f"peak_finder: event {event.index} has a frame of shape {frame.shape},"
                    f" earlier frames were {shape}"
                )
            peaks = ring[slot]
            n = finder(frame, peaks)
            hit = n >= cfg.min_peaks
            self.frames += 1
            self.hits += hit
            if cfg.hits_only and not hit:
                self.dropped += 1
                continue
            event.data[f"{p}n_peaks"] = np.int32(n)
            event.data[f"{p}peaks"] = peaks
            event.data[f"{p}is_hit"] = np.uint8(hit)
            slot = (slot + 1) % len(ring)
            yield event

    def __call__(self, events: Iterator[Event]) -> Iterator[Batch]:
        return batched(self._annotate(events), self.cfg.batch_size)
