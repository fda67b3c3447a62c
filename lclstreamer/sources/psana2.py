"""psana2 (LCLS-II) event source on the real psana library.

Two ways to share a run among the MPI ranks:

- by `experiment`/`run`, psana2 partitions: under `mpirun -n N` (N >= 3) rank 0 reads
  the small data, rank 1 builds events and ranks 2..N-1 receive them in batches; an
  event's index is `k * N + r` for the k-th event rank r receives (unique, not the
  order in the run, which psana2 does not expose);
- by `files`, lclstreamer partitions: every rank reads the files and keeps events
  r, r + N, ...; an event's index is its position in the files.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import DataError, SourceError
from ..models import Psana2EventSource
from ..protocols import RunInfo, StreamContext
from .psana import Detectors, as_array, import_psana

Reader = Callable[[Any], Any]
"""Takes a psana2 event, returns the value (or None when the event lacks it)."""

_REPRESENTATIONS = ("calib", "raw", "image")


def calibration_wanted(cfg: Psana2EventSource) -> bool:
    """Whether psana loads calibration constants: as configured, else only at the facility
    (a run named by experiment, without a directory or files)."""
    if cfg.calibration is not None:
        return cfg.calibration
    return cfg.files is None and cfg.directory is None


def psana_partitions(cfg: Psana2EventSource) -> bool:
    """True when psana2 spreads the events over the ranks (a run by experiment/run)."""
    return cfg.files is None


def datasource_kwargs(cfg: Psana2EventSource, max_events: int | None) -> dict[str, Any]:
    """The keyword arguments of `psana.DataSource` for this configuration."""
    kwargs: dict[str, Any] = {}
    if cfg.files is not None:
        kwargs["files"] = cfg.files
    else:
        kwargs["exp"] = cfg.experiment
        kwargs["run"] = cfg.run
        if cfg.directory is not None:
            kwargs["dir"] = cfg.directory
    if not calibration_wanted(cfg):
        kwargs["skip_calib_load"] = "all"
    if cfg.live:
        kwargs["live"] = True
    if cfg.batch_size is not None:
        kwargs["batch_size"] = cfg.batch_size
    cap = event_cap(cfg, max_events)
    if cap is not None and psana_partitions(cfg):
        kwargs["max_events"] = cap  # psana2 ignores it when reading files
    return kwargs


def event_cap(cfg: Psana2EventSource, max_events: int | None) -> int | None:
    """The first events of the run to stream (config and command line; None: all)."""
    caps = [n for n in (cfg.max_events, max_events) if n is not None]
    return min(caps) if caps else None


def missing_input(cfg: Psana2EventSource) -> str | None:
    """What is missing on disk for an offline read (checked before psana, on every rank,
    because psana2's MPI ranks wait for each other and one failing rank would stall them)."""
    if cfg.files is not None:
        files = [cfg.files] if isinstance(cfg.files, str) else cfg.files
        absent = [f for f in files if not os.path.isfile(f)]
        return f"no such xtc2 file: {', '.join(absent)}" if absent else None
    if cfg.directory is None or cfg.live:
        return None
    pattern = os.path.join(cfg.directory, "smalldata", f"*-r{cfg.run:04d}-s*.smd.xtc2")
    if not glob.glob(pattern) and not glob.glob(pattern + ".inprogress"):
        return f"no small-data files of run {cfg.run} ({pattern})"
    return None


def tolerate_offline_logbook(psana: Any) -> None:
    """Let psana2 find a run's files in `dir=` when the facility's logbook is unreachable.

    psana 4.3 asks the logbook (over HTTPS) for a run's file list even when `dir=` is
    given; when the logbook answers with an error it scans the directory, but when it
    cannot connect (any machine off the facility network) the exception escapes. This
    wraps that one look-up so a connection failure is treated like an error answer.
    """
    import requests
    from psana.psexp import ds_base  # noqa: F401  (psana is importable: the caller checked)

    cls = ds_base.DataSourceBase
    lookup = getattr(cls, "_get_file_info_from_db", None)
    if lookup is None or getattr(lookup, "lclstreamer_offline", False):
        return

    def file_info(self: Any, runnum: int) -> dict[str, Any]:
        try:
            return lookup(self, runnum)
        except requests.RequestException:
            return {}

    file_info.lclstreamer_offline = True  # type: ignore[attr-defined]
    cls._get_file_info_from_db = file_info


def _public(obj: Any) -> str:
    names = [a for a in dir(obj) if not a.startswith("_")]
    return ", ".join(names) or "nothing"


def segment_field(interface: Any, field: str, what: str) -> Reader:
    """A data field of the detector's segments: the segment's value for a one-segment
    detector, else the segments' values stacked in segment order (what psana's generic
    detectors expose as methods, for interfaces that do not)."""

    def read(evt: Any) -> Any:
        segments = interface._segments(evt)
        if segments is None:
            return None
        try:
            values = [getattr(segments[k], field) for k in sorted(segments)]
        except AttributeError:
            first = segments[min(segments)]
            raise DataError(
                f"psana2 {what}: the detector's data has no field {field!r}"
                f" (it has: {_public(first)})"
            ) from None
        return values[0] if len(values) == 1 else np.stack(values)

    return read


def resolve(det: Any, name: str, path: str) -> Reader:
    """The reader for a dotted path under a psana2 detector (`raw.calib`, `fex.arrayFex`).

    The path walks attributes; a method ends it and is called with the event; a last
    name the interface does not have is read from the detector's data segments.
    """
    what = f"{name}.{path}"
    parts = path.split(".")
    obj = det
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if hasattr(obj, part):
            obj = getattr(obj, part)
            if callable(obj) and not last:
                done = ".".join(parts[: i + 1])
                raise SourceError(f"psana2 {what}: {name}.{done} is a method; nothing follows it")
        elif last and i > 0 and hasattr(obj, "_segments"):
            return segment_field(obj, part, what)
        else:
            where = ".".join([name, *parts[:i]])
            raise SourceError(f"psana2 {what}: {where} has no {part!r} (it has: {_public(obj)})")
    if callable(obj):
        return obj
    value = obj
    return lambda evt: value


class Psana2Event:
    """A psana2 event seen through the RawEvent accessors."""

    __slots__ = ("index", "_evt", "_src")

    def __init__(self, index: int, evt: Any, src: Psana2Source) -> None:
        self.index = index
        self._evt = evt
        self._src = src

    def detector(self, name: str, kind: str) -> np.ndarray | None:
        """`kind` calib/raw/image means raw.<kind>; any other is a dotted path."""
        return as_array(self._src.reader(name, kind)(self._evt), "psana2", name, kind)

    def scalar(self, name: str) -> Any | None:
        return self._src.reader(name, "")(self._evt)

    def timestamp(self) -> int | None:
        return int(self._evt.timestamp)

    def photon_energy_ev(self) -> float | None:
        value = self._src.reader(self._src.cfg.ebeam, "raw.ebeamPhotonEnergy")(self._evt)
        return None if value is None else float(value)

    def event_codes(self) -> np.ndarray | None:
        codes = self._src.reader(self._src.cfg.timing, "raw.eventcodes")(self._evt)
        if codes is None:
            return None
        codes = np.asarray(codes)
        return np.flatnonzero(codes) if codes.size == 256 else codes


class Psana2Source:
    """LCLS-II events through `psana.DataSource` (see the module docstring for ranks)."""

    def __init__(self, cfg: Psana2EventSource, ctx: StreamContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        psana = import_psana("psana2")
        problem = missing_input(cfg)
        if problem:
            raise SourceError(f"psana2: {problem}")
        if cfg.directory is not None and not cfg.live:
            tolerate_offline_logbook(psana)
        kwargs = datasource_kwargs(cfg, ctx.max_events)
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        try:
            self.ds = psana.DataSource(**kwargs)
            self._runs = iter(self.ds.runs())
            run = next(self._runs, None)
        except (Exception, SystemExit) as exc:  # psana exits on some missing inputs
            text = " ".join(str(exc).split())  # psana's messages span lines; ours is one
            raise SourceError(f"psana2: cannot open DataSource({shown}): {text}") from None
        if run is None:
            raise SourceError(f"psana2: DataSource({shown}) holds no run")
        self._pending: Iterator[Any] | None = None
        self._streaming = False
        self._bind(run)
        self._info = RunInfo(str(run.expt), int(run.runnum), int(run.timestamp))

    def _bind(self, run: Any) -> None:
        self._run = run
        self.dets = Detectors(run.Detector, "psana2")
        self._readers: dict[tuple[str, str], Reader] = {}

    def reader(self, name: str, path: str) -> Reader:
        """The cached reader of `path` under detector `name` in the current run (an empty
        path: the detector itself, called with the event)."""
        key = (name, path)
        read = self._readers.get(key)
        if read is None:
            det = self.dets[name]
            if not path:  # the detector itself: an EPICS PV or a scan value
                if not callable(det):
                    raise SourceError(
                        f"psana2: {name!r} is not a scalar (an EPICS PV or scan value);"
                        " read it with a detector data source"
                    )
                read = det
            else:
                full = f"raw.{path}" if path in _REPRESENTATIONS else path
                read = resolve(det, name, full)
            self._readers[key] = read
        return read

    def run_info(self) -> RunInfo:
        return self._info

    def events(self) -> Iterator[Psana2Event]:
        rank, size = self.ctx.rank, self.ctx.size
        by_psana = psana_partitions(self.cfg)
        cap = None if by_psana else event_cap(self.cfg, self.ctx.max_events)
        position = 0
        run = self._run
        self._streaming = True
        while run is not None:
            if run is not self._run:
                self._bind(run)
            self._pending = pending = run.events()
            for evt in pending:
                if by_psana:
                    yield Psana2Event(position * size + rank, evt, self)
                elif cap is not None and position >= cap:
                    return
                elif position % size == rank:
                    yield Psana2Event(position, evt, self)
                position += 1
            self._pending = None
            run = None if self.ctx.stop() else next(self._runs, None)
        self._streaming = False

    def close(self) -> None:
        """Let psana2's ranks finish together when this rank stopped streaming early (a
        signal): psana's `terminate` tells its small-data reader to stop, and the rest of
        the run, which psana then skips, is drained. After a stop no rank starts another
        run (psana2's ranks set up each run together)."""
        if self._streaming and psana_partitions(self.cfg) and self.ctx.size > 1:
            self._streaming = False
            self._run.terminate()
            for _ in self._pending or ():
                pass
        self._pending = None
        self.ds = None
        self._runs = iter(())
