"""Electron counting (pure), following stempy's documented algorithm: subtract the dark
reference's integer part, keep pixels above the background threshold and below the X-ray
threshold that are strictly greater than each of their 8 neighbours (as stempy does:
checked against stempy.image.electron_count_frame in tests/lclstreamer/test_stem.py).
Thresholds come from a sample of frames: a Gaussian fitted to the histogram of
dark-subtracted values gives mean and sigma; background = mean + N sigma, X-ray = mean + M sigma."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

FIT_VALUES = 1 << 19  # at most about this many values enter the Gaussian fit
_NEIGHBOURS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc]


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mean: float
    sigma: float
    background: float
    xray: float
    samples: int


def gaussian_fit(values: np.ndarray) -> tuple[float, float]:
    """(mean, sigma) of the Gaussian core of `values` (an even subsample of at most
    about FIT_VALUES of them): a parabola fitted to the log of the histogram within 2.5
    robust sigmas of the median (electrons, far in the tail, do not pull it)."""
    v = values.ravel()
    v = v[:: max(1, v.size // FIT_VALUES)]  # an even subsample: the fit needs no more
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med))) * 1.4826 or 1.0
    lo, hi = med - 2.5 * mad, med + 2.5 * mad
    nbins = 64
    hist, edges = np.histogram(v, bins=nbins, range=(lo, hi))
    centres = 0.5 * (edges[1:] + edges[:-1])
    ok = hist > 0
    a, b, _c = np.polyfit(centres[ok], np.log(hist[ok]), 2, w=np.sqrt(hist[ok]))
    if a >= 0:  # not peaked: fall back to the robust estimates
        return med, mad
    sigma = float(np.sqrt(-1.0 / (2.0 * a)))
    return float(-b / (2.0 * a)), sigma


def thresholds(
    frames: np.ndarray, dark: np.ndarray, background_sigma: float, xray_sigma: float
) -> Thresholds:
    """Thresholds from a sample of frames (n, rows, cols) and the dark reference."""
    d = frames.astype(np.float32) - dark
    mean, sigma = gaussian_fit(d)
    return Thresholds(
        mean=mean,
        sigma=sigma,
        background=mean + background_sigma * sigma,
        xray=mean + xray_sigma * sigma,
        samples=int(frames.shape[0]),
    )


class Counter:
    """Counts frames of one shape with fixed thresholds, reusing its buffers."""

    def __init__(self, dark: np.ndarray, th: Thresholds) -> None:
        # stempy subtracts the dark reference's integer part (its frames are integers)
        self.dark = np.floor(np.asarray(dark, dtype=np.float32))
        self.th = th
        rows, cols = dark.shape
        self._padded = np.full((rows + 2, cols + 2), -np.inf, dtype=np.float32)
        self._d = self._padded[1:-1, 1:-1]
        self._cols = cols

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Flat pixel indices (row * cols + col, uint32) of the electrons in `frame`."""
        d, th = self._d, self.th
        np.subtract(frame, self.dark, out=d, dtype=np.float32, casting="unsafe")
        rows, cols = np.nonzero((d > th.background) & (d < th.xray))
        if not len(rows):
            return np.empty(0, dtype=np.uint32)
        value = d[rows, cols]
        keep = np.ones(len(rows), dtype=bool)
        p = self._padded
        for dr, dc in _NEIGHBOURS:
            keep &= value > p[rows + 1 + dr, cols + 1 + dc]
        return (rows[keep] * self._cols + cols[keep]).astype(np.uint32)
