"""Data sources: functions that take one named value out of a raw event."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import models as m
from .protocols import DataSource, RawEvent, RunInfo, StreamContext
from .sources.frames import wavelength_m

_UNIT = {"m": 1.0, "nm": 1e9, "angstrom": 1e10}


def detector(cfg: m.DetectorData, ctx: StreamContext, run: RunInfo) -> DataSource:
    """The detector array (`field`, else `kind`), optionally cast to `dtype` (no copy when it
    already matches); a list of fields is stacked into one array."""
    name = cfg.source
    dtype = np.dtype(cfg.dtype) if cfg.dtype else None
    kinds = cfg.field if isinstance(cfg.field, list) else [cfg.field or cfg.kind]

    def one(event: RawEvent) -> np.ndarray | None:
        return event.detector(name, kinds[0])

    def stacked(event: RawEvent) -> np.ndarray | None:
        values = [event.detector(name, kind) for kind in kinds]
        return None if any(v is None for v in values) else np.stack(values)

    read = one if len(kinds) == 1 else stacked

    def get(event: RawEvent) -> np.ndarray | None:
        value = read(event)
        if value is None or dtype is None:
            return value
        return np.asarray(value).astype(dtype, copy=False)

    return get


def scalar(cfg: m.ScalarData, ctx: StreamContext, run: RunInfo) -> DataSource:
    """A per-event scalar as a numpy scalar of `dtype`."""
    name, dtype = cfg.source, np.dtype(cfg.dtype)

    def get(event: RawEvent) -> Any | None:
        value = event.scalar(name)
        return None if value is None else dtype.type(value)

    return get


def timestamp(cfg: m.TimestampData, ctx: StreamContext, run: RunInfo) -> DataSource:
    """uint64 seconds << 32 | nanoseconds."""

    def get(event: RawEvent) -> np.uint64 | None:
        value = event.timestamp()
        return None if value is None else np.uint64(value)

    return get


def photon_energy(cfg: m.PhotonEnergyData, ctx: StreamContext, run: RunInfo) -> DataSource:
    """Photon energy in eV."""

    def get(event: RawEvent) -> np.float64 | None:
        value = event.photon_energy_ev()
        return None if value is None or not value > 0 else np.float64(value)

    return get


def wavelength(cfg: m.WavelengthData, ctx: StreamContext, run: RunInfo) -> DataSource:
    """Photon wavelength in the configured unit, from the photon energy."""
    scale = _UNIT[cfg.unit]

    def get(event: RawEvent) -> np.float64 | None:
        value = event.photon_energy_ev()
        return None if value is None or not value > 0 else np.float64(wavelength_m(value) * scale)

    return get


def event_index(cfg: m.EventIndexData, ctx: StreamContext, run: RunInfo) -> DataSource:
    """The event's index in the run."""
    return lambda event: np.uint64(event.index)


def event_codes(cfg: m.EventCodesData, ctx: StreamContext, run: RunInfo) -> DataSource:
    """256 uint8 flags, one per event code."""

    def get(event: RawEvent) -> np.ndarray | None:
        codes = event.event_codes()
        if codes is None:
            return None
        flags = np.zeros(256, dtype=np.uint8)
        flags[np.asarray(codes, dtype=np.int64) & 0xFF] = 1
        return flags

    return get


def constant(cfg: m.ConstantData, ctx: StreamContext, run: RunInfo) -> DataSource:
    """The same (read-only) value for every event."""
    if isinstance(cfg.value, str):
        value: Any = cfg.value
    else:
        value = np.asarray(cfg.value, dtype=cfg.dtype)
        value.setflags(write=False)
    return lambda event: value


def random_array(cfg: m.RandomArrayData, ctx: StreamContext, run: RunInfo) -> DataSource:
    """A random array per event (upstream's GenericRandomNumpyArray), seeded by the event."""
    shape, dtype, seed = tuple(cfg.shape), np.dtype(cfg.dtype), cfg.seed
    integer = dtype.kind in "iu"

    def get(event: RawEvent) -> np.ndarray:
        rng = np.random.default_rng([seed, event.index])
        if integer:
            return rng.integers(0, 255, size=shape, dtype=dtype)
        return rng.random(shape, dtype=dtype)

    return get


def source_identifier(cfg: m.SourceIdentifierData, ctx: StreamContext, run: RunInfo) -> DataSource:
    """The configuration's source identifier."""
    value = ctx.source_identifier
    return lambda event: value


def run_info(cfg: m.RunInfoData, ctx: StreamContext, run: RunInfo) -> DataSource:
    """The experiment name (string), the run number (int64) or its start time (uint64)."""
    value: Any
    if cfg.key == "experiment":
        value = run.experiment
    elif cfg.key == "timestamp":
        value = None if run.timestamp is None else np.uint64(run.timestamp)
    else:
        value = np.int64(run.run)
    return lambda event: value
