"""psana1 / psana2 adapters; psana is imported only when such a source is opened."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import SourceError
from ..models import Psana1EventSource, Psana2EventSource
from ..partition import limit
from ..protocols import RunInfo, StreamContext


def import_psana(which: str) -> Any:
    """The psana module, or a SourceError saying it is needed and absent."""
    try:
        return importlib.import_module("psana")
    except ImportError as exc:
        raise SourceError(
            f"the {which} event source needs the psana package (an LCLS analysis environment);"
            f" it cannot be imported here: {exc}"
        ) from None


def _array(value: Any) -> np.ndarray | None:
    return None if value is None else np.asarray(value)


class _Detectors:
    """psana detector objects created on first use and cached by name."""

    def __init__(self, make: Callable[[str], Any], which: str) -> None:
        self._make = make
        self._which = which
        self._cache: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        det = self._cache.get(name)
        if det is None:
            try:
                det = self._make(name)
            except Exception as exc:  # psana raises assorted types for unknown detectors
                raise SourceError(
                    f"{self._which}: no detector {name!r} in this run: {exc}"
                ) from None
            self._cache[name] = det
        return det


class Psana1Event:
    """A psana1 event seen through the RawEvent accessors."""

    __slots__ = ("index", "_evt", "_src")

    def __init__(self, index: int, evt: Any, src: Psana1Source) -> None:
        self.index = index
        self._evt = evt
        self._src = src

    def detector(self, name: str, kind: str) -> np.ndarray | None:
        det = self._src.dets[name]
        return _array(getattr(det, kind)(self._evt))

    def scalar(self, name: str) -> Any | None:
        return self._src.dets[name](self._evt)

    def timestamp(self) -> int | None:
        eid = self._evt.get(self._src.psana.EventId)
        if eid is None:
            return None
        sec, nsec = eid.time()
        return int(sec) << 32 | int(nsec)

    def photon_energy_ev(self) -> float | None:
        beam = self._src.dets[self._src.cfg.ebeam].get(self._evt)
        return None if beam is None else float(beam.ebeamPhotonEnergy())

    def event_codes(self) -> np.ndarray | None:
        return _array(self._src.dets[self._src.cfg.evr].eventCodes(self._evt))


class Psana1Source:
    """LCLS-I events; rank r takes events r, r + size, ... of the run."""

    def __init__(self, cfg: Psana1EventSource, ctx: StreamContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.psana = import_psana("psana1")
        spec = f"exp={cfg.experiment}:run={cfg.run}:{cfg.mode}"
        if cfg.directory:
            spec += f":dir={cfg.directory}"
        try:
            self.ds = self.psana.DataSource(spec)
        except Exception as exc:
            raise SourceError(f"psana1: cannot open {spec}: {exc}") from None
        self.dets = _Detectors(self.psana.Detector, "psana1")

    def run_info(self) -> RunInfo:
        return RunInfo(self.cfg.experiment, self.cfg.run)

    def events(self) -> Iterator[Psana1Event]:
        rank, size, cap = self.ctx.rank, self.ctx.size, self.ctx.max_events
        if self.cfg.mode == "idx":
            run = next(iter(self.ds.runs()))
            times = run.times()
            for index in range(rank, limit(len(times), cap), size):
                yield Psana1Event(index, run.event(times[index]), self)
            return
        for index, evt in enumerate(self.ds.events()):
            if cap is not None and index >= cap:
                break
            if index % size == rank:
                yield Psana1Event(index, evt, self)

    def close(self) -> None:
        self.ds = None


class Psana2Event:
    """A psana2 event seen through the RawEvent accessors."""

    __slots__ = ("index", "_evt", "_src")

    def __init__(self, index: int, evt: Any, src: Psana2Source) -> None:
        self.index = index
        self._evt = evt
        self._src = src

    def detector(self, name: str, kind: str) -> np.ndarray | None:
        det = self._src.dets[name]
        return _array(getattr(det.raw, kind)(self._evt))

    def scalar(self, name: str) -> Any | None:
        return self._src.dets[name](self._evt)

    def timestamp(self) -> int | None:
        return int(self._evt.timestamp)

    def photon_energy_ev(self) -> float | None:
        value = self._src.dets[self._src.cfg.ebeam].raw.ebeamPhotonEnergy(self._evt)
        return None if value is None else float(value)

    def event_codes(self) -> np.ndarray | None:
        codes = self._src.dets[self._src.cfg.timing].raw.eventcodes(self._evt)
        if codes is None:
            return None
        codes = np.asarray(codes)
        return np.flatnonzero(codes) if codes.size == 256 else codes


class Psana2Source:
    """LCLS-II events; psana2 itself spreads events over the MPI ranks.

    psana2 exposes no run-wide event number, so an event's index is
    ``k * size + rank`` for the k-th event this rank receives: unique, but not
    the order in the run.
    """

    def __init__(self, cfg: Psana2EventSource, ctx: StreamContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.psana = import_psana("psana2")
        kwargs: dict[str, Any] = {"exp": cfg.experiment, "run": cfg.run}
        if cfg.directory:
            kwargs["dir"] = cfg.directory
        if ctx.max_events is not None:
            kwargs["max_events"] = ctx.max_events
        try:
            self.ds = self.psana.DataSource(**kwargs)
        except Exception as exc:
            raise SourceError(
                f"psana2: cannot open exp={cfg.experiment} run={cfg.run}: {exc}"
            ) from None
        self._run: Any = None
        self.dets = _Detectors(lambda name: self._run.Detector(name), "psana2")

    def run_info(self) -> RunInfo:
        return RunInfo(self.cfg.experiment, self.cfg.run)

    def events(self) -> Iterator[Psana2Event]:
        rank, size = self.ctx.rank, self.ctx.size
        k = 0
        for run in self.ds.runs():
            self._run = run
            self.dets = _Detectors(run.Detector, "psana2")
            for evt in run.events():
                yield Psana2Event(k * size + rank, evt, self)
                k += 1

    def close(self) -> None:
        self.ds = None
