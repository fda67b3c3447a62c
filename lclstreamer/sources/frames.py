"""Simulated detector frames: Bragg-like peaks on a Poisson background (pure)."""

from __future__ import annotations

import math

import numpy as np


def make_frame(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    dtype: str,
    background: float,
    peaks: int,
    peak_intensity: float,
    peak_sigma: float,
    positions: list[tuple[int, ...]] | None = None,
) -> np.ndarray:
    """One frame of `shape`: Poisson(background) plus `peaks` Gaussian spots.

    Spots are placed on the last two axes (a module of an area detector), or on
    the last axis for 1-D shapes (a digitizer waveform). The index of each spot's
    centre is appended to `positions` when given.
    """
    frame = (
        rng.poisson(background, size=shape).astype(np.float64)
        if background
        else (np.zeros(shape, dtype=np.float64))
    )
    half = max(1, math.ceil(3 * peak_sigma))
    offsets = np.arange(-half, half + 1)
    profile = np.exp(-0.5 * (offsets / peak_sigma) ** 2)
    spot = np.multiply.outer(profile, profile) if len(shape) >= 2 else profile
    spot = peak_intensity * spot
    for _ in range(peaks):
        lead = tuple(int(rng.integers(n)) for n in shape[:-2]) if len(shape) > 2 else ()
        if len(shape) >= 2:
            at = _add_spot_2d(frame[lead] if lead else frame, spot, rng, half)
        else:
            at = _add_spot_1d(frame, spot, rng, half)
        if positions is not None:
            positions.append((*lead, *at))
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        np.clip(np.rint(frame, out=frame), info.min, info.max, out=frame)
    return frame.astype(dtype)


def _add_spot_2d(
    plane: np.ndarray, spot: np.ndarray, rng: np.random.Generator, half: int
) -> tuple[int, int]:
    rows, cols = plane.shape
    r, c = int(rng.integers(rows)), int(rng.integers(cols))
    r0, r1 = max(0, r - half), min(rows, r + half + 1)
    c0, c1 = max(0, c - half), min(cols, c + half + 1)
    plane[r0:r1, c0:c1] += spot[r0 - r + half : r1 - r + half, c0 - c + half : c1 - c + half]
    return r, c


def _add_spot_1d(
    line: np.ndarray, spot: np.ndarray, rng: np.random.Generator, half: int
) -> tuple[int]:
    n = line.shape[0]
    x = int(rng.integers(n))
    x0, x1 = max(0, x - half), min(n, x + half + 1)
    line[x0:x1] += spot[x0 - x + half : x1 - x + half]
    return (x,)


def timestamp(start_time: float, rate_hz: float, index: int) -> int:
    """uint64 time stamp (seconds << 32 | nanoseconds) of event `index` at a nominal rate."""
    ns = round(start_time * 1e9) + round(index * 1e9 / rate_hz)
    return (ns // 1_000_000_000) << 32 | ns % 1_000_000_000


def split_timestamp(stamp: int) -> tuple[int, int]:
    """(seconds, nanoseconds) of a uint64 time stamp."""
    return stamp >> 32, stamp & 0xFFFFFFFF


def wavelength_m(photon_energy_ev: float) -> float:
    """Photon wavelength in metres for an energy in eV (lambda = h c / E)."""
    hc_ev_m = 1.239841984332e-6  # CODATA 2018 (exact h, c, e)
    return hc_ev_m / photon_energy_ev
