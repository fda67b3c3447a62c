"""psana1 (LCLS-I) event source: an adapter over psana1's API.

psana1 cannot be installed here, so the tests run it against a stand-in module that
implements the calls made below (tests/lclstreamer/test_psana1.py says so).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import SourceError
from ..models import Psana1EventSource
from ..partition import limit
from ..protocols import RunInfo, StreamContext
from .psana import Detectors, as_array, import_psana


class Psana1Event:
    """A psana1 event seen through the RawEvent accessors."""

    __slots__ = ("index", "_evt", "_src")

    def __init__(self, index: int, evt: Any, src: Psana1Source) -> None:
        self.index = index
        self._evt = evt
        self._src = src

    def detector(self, name: str, kind: str) -> np.ndarray | None:
        det = self._src.dets[name]
        return as_array(getattr(det, kind)(self._evt), "psana1", name, kind)

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
        codes = self._src.dets[self._src.cfg.evr].eventCodes(self._evt)
        return None if codes is None else np.asarray(codes)


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
        self.dets = Detectors(self.psana.Detector, "psana1")

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
