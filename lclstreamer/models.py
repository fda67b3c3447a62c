"""Configuration models: the contract of an lclstreamer YAML file.

Every section is a pydantic v2 model with ``extra="forbid"``; sections that
have several implementations are discriminated unions on ``type``.  This module
imports nothing but pydantic and the standard library, so the transfer service
can validate requests with it without initialising MPI.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError


class Model(BaseModel):
    """Base for every config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


DType = Literal[
    "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64"
]

_DATASET_PATH = re.compile(r"^(/[A-Za-z0-9_.\-]+)+$")

# ---------------------------------------------------------------------------
# Event sources
# ---------------------------------------------------------------------------


class SyntheticDetector(Model):
    """One simulated detector: Bragg-like peaks on a Poisson background."""

    shape: list[Annotated[int, Field(gt=0)]] = Field(
        default=[16, 352, 384],
        min_length=1,
        max_length=4,
        description="Shape of one frame, e.g. [16, 352, 384] (epix10k2M) or [1024, 1024].",
    )
    dtype: DType = "float32"
    background: float = Field(default=2.0, ge=0, description="Mean Poisson background (photons).")
    peaks: int = Field(default=20, ge=0, description="Bragg-like peaks per frame.")
    peak_intensity: float = Field(default=200.0, ge=0, description="Peak height (photons).")
    peak_sigma: float = Field(default=1.2, gt=0, description="Peak width in pixels.")
    missing_every: int | None = Field(
        default=None,
        ge=2,
        description="Leave this detector out of every N-th event (index % N == N-1), "
        "to emulate dropped frames.",
    )


class SyntheticEventSource(Model):
    """Deterministic simulated events (same seed, same events)."""

    type: Literal["synthetic"]
    number_of_events: int = Field(gt=0, description="Events in the whole run (all ranks).")
    seed: int = Field(default=0, ge=0, description="Same seed, same frames and energies.")
    detectors: dict[str, SyntheticDetector] = Field(
        default_factory=lambda: {"epix10k2M": SyntheticDetector()}, min_length=1
    )
    pool_size: int = Field(
        default=8,
        ge=0,
        description="Distinct frames generated per detector at start-up; event i shows frame "
        "i % pool_size. 0 generates a fresh frame for every event (slow, all unique).",
    )
    photon_energy_ev: float = Field(default=9500.0, gt=0, description="Mean photon energy.")
    photon_energy_jitter_ev: float = Field(
        default=5.0, ge=0, description="Standard deviation of the per-event energy."
    )
    event_rate_hz: float = Field(default=120.0, gt=0, description="Nominal rate for timestamps.")
    start_time: float = Field(default=1_700_000_000.0, ge=0, description="UNIX time of event 0.")
    rate_limit_hz: float | None = Field(
        default=None, gt=0, description="Emit at most this many events/s per rank (live emulation)."
    )
    event_codes: dict[int, int] = Field(
        default_factory=lambda: {40: 1, 140: 1, 162: 10},
        description="Event code -> period: code c is present when index % period == 0.",
    )
    experiment: str = "synthetic"
    run: int = Field(default=1, ge=0)

    @field_validator("event_codes")
    @classmethod
    def _codes_in_range(cls, value: dict[int, int]) -> dict[int, int]:
        for code, period in value.items():
            if not 0 <= code <= 255:
                raise ValueError(f"event code {code} is outside 0..255")
            if period < 1:
                raise ValueError(f"period of event code {code} must be >= 1, got {period}")
        return value


class HDF5Timestamp(Model):
    """Where per-event timestamps live in the HDF5 files."""

    seconds: str = Field(description="Dataset of per-event seconds (integer or float).")
    nanoseconds: str | None = Field(default=None, description="Dataset of per-event nanoseconds.")


class HDF5EventSource(Model):
    """Events read from HDF5/CXI files: one row of each dataset per event."""

    type: Literal["hdf5"]
    files: str | list[str] = Field(description="File path or glob, or a list of them.")
    datasets: dict[str, str] = Field(
        min_length=1,
        description="Name -> dataset path, e.g. {detector: /entry_1/data_1/data}. The first "
        "axis of every dataset is the event axis.",
    )
    photon_energy_ev: str | None = Field(default=None, description="Dataset of energies (eV).")
    timestamp: HDF5Timestamp | None = None
    read_block: int = Field(default=16, gt=0, description="Events this rank reads per slice.")
    experiment: str = ""
    run: int = Field(default=0, ge=0)

    @field_validator("datasets")
    @classmethod
    def _paths(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            _check_dataset_path(path, f"dataset of {name!r}")
        return value


class Psana1EventSource(Model):
    """LCLS-I data through psana (imported only when the source is opened)."""

    type: Literal["psana1"]
    experiment: str = Field(min_length=1)
    run: int = Field(ge=0)
    mode: Literal["smd", "idx"] = "smd"
    directory: str | None = Field(default=None, description="xtc directory (psana `dir=`).")
    ebeam: str = Field(default="EBeam", description="Detector giving the photon energy.")
    evr: str = Field(default="evr0", description="Detector giving the event codes.")


class Psana2EventSource(Model):
    """LCLS-II data through psana2 (which distributes events over MPI ranks itself)."""

    type: Literal["psana2"]
    experiment: str = Field(min_length=1)
    run: int = Field(ge=0)
    directory: str | None = Field(default=None, description="xtc2 directory (psana `dir=`).")
    ebeam: str = Field(default="ebeam", description="Detector giving the photon energy.")
    timing: str = Field(default="timing", description="Detector giving the event codes.")


EventSourceConfig = Annotated[
    SyntheticEventSource | HDF5EventSource | Psana1EventSource | Psana2EventSource,
    Field(discriminator="type"),
]

# ---------------------------------------------------------------------------
# Data sources (name -> how to get that value from an event)
# ---------------------------------------------------------------------------


class DetectorData(Model):
    """A detector array of the event (`source` names the detector in the event source)."""

    type: Literal["detector"]
    source: str = Field(min_length=1)
    kind: Literal["calib", "raw", "image"] = Field(
        default="calib", description="psana only: which representation of the detector."
    )
    dtype: DType | None = Field(default=None, description="Cast to this dtype.")


class ScalarData(Model):
    """A per-event scalar (psana: EPICS PV or detector; hdf5: a 1-D dataset)."""

    type: Literal["scalar"]
    source: str = Field(min_length=1)
    dtype: DType = "float64"


class TimestampData(Model):
    """uint64 time stamp: seconds << 32 | nanoseconds."""

    type: Literal["timestamp"]


class PhotonEnergyData(Model):
    """Photon energy in eV (float64)."""

    type: Literal["photon_energy"]


class WavelengthData(Model):
    """Photon wavelength computed from the photon energy (float64)."""

    type: Literal["wavelength"]
    unit: Literal["m", "nm", "angstrom"] = "angstrom"


class EventIndexData(Model):
    """The event's index in the run (uint64), the same whatever the rank count."""

    type: Literal["event_index"]


class EventCodesData(Model):
    """256 uint8 flags: element c is 1 when event code c fired."""

    type: Literal["event_codes"]


class ConstantData(Model):
    """The same value (number, list of numbers or string) for every event."""

    type: Literal["constant"]
    value: float | int | str | list[float] | list[list[float]]
    dtype: DType | None = None


class SourceIdentifierData(Model):
    """The configuration's `source_identifier` string."""

    type: Literal["source_identifier"]


class RunInfoData(Model):
    """Run information from the event source: the experiment name or the run number."""

    type: Literal["run_info"]
    key: Literal["experiment", "run"] = "run"


DataSourceConfig = Annotated[
    DetectorData
    | ScalarData
    | TimestampData
    | PhotonEnergyData
    | WavelengthData
    | EventIndexData
    | EventCodesData
    | ConstantData
    | SourceIdentifierData
    | RunInfoData,
    Field(discriminator="type"),
]

# ---------------------------------------------------------------------------
# Processing pipeline, serializer, handlers
# ---------------------------------------------------------------------------


class BatchPipeline(Model):
    """Stack events into batches of `batch_size` (the last one may be shorter)."""

    type: Literal["batch"]
    batch_size: int = Field(default=10, gt=0, le=100_000)


ProcessingPipelineConfig = Annotated[BatchPipeline, Field(discriminator="type")]

Compression = Literal["none", "gzip", "gzip_with_shuffle", "bitshuffle_lz4", "bitshuffle_zstd"]

_LEVELS: dict[str, tuple[int, int] | None] = {
    "none": None,
    "gzip": (0, 9),
    "gzip_with_shuffle": (0, 9),
    "bitshuffle_lz4": None,
    "bitshuffle_zstd": (1, 22),
}


class HDF5Serializer(Model):
    """One in-memory HDF5 file per batch; datasets have shape (B, ...), one chunk per event."""

    type: Literal["hdf5"]
    fields: dict[str, str] = Field(
        min_length=1, description="Data source name -> dataset path in the file."
    )
    compression: Compression = "none"
    compression_level: int | None = Field(
        default=None, description="gzip: 0-9 (default 4); bitshuffle_zstd: 1-22 (default 3)."
    )

    @field_validator("fields")
    @classmethod
    def _paths(cls, value: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for name, path in value.items():
            _check_dataset_path(path, f"dataset path of {name!r}")
            if path in seen:
                raise ValueError(f"{name!r} and {seen[path]!r} both map to {path}")
            seen[path] = name
        for path in seen:
            for other in seen:
                if other.startswith(path + "/"):
                    raise ValueError(f"{path} is a dataset, so {other} cannot be inside it")
        return value

    @model_validator(mode="after")
    def _level(self) -> HDF5Serializer:
        allowed = _LEVELS[self.compression]
        if self.compression_level is None:
            return self
        if allowed is None:
            raise ValueError(f"compression {self.compression!r} takes no compression_level")
        lo, hi = allowed
        if not lo <= self.compression_level <= hi:
            raise ValueError(
                f"compression_level {self.compression_level} is outside {lo}..{hi}"
                f" for {self.compression}"
            )
        return self


SerializerConfig = Annotated[HDF5Serializer, Field(discriminator="type")]


class FileHandler(Model):
    """Write every message to `<directory>/<prefix>-r<rank>-<counter><suffix>` (atomic rename)."""

    type: Literal["file"]
    directory: str = "."
    prefix: str = Field(default="lclstreamer", pattern=r"^[A-Za-z0-9_.\-]+$")


class NNGPushHandler(Model):
    """Send every message on an NNG Push0 socket."""

    type: Literal["nng_push"]
    urls: list[str] = Field(min_length=1, description="tcp://host:port, ipc://path, ...")
    mode: Literal["dial", "listen"] = "dial"
    distribute: bool = Field(
        default=True, description="Rank r uses only urls[r % len(urls)] (else all of them)."
    )
    send_timeout: float | None = Field(
        default=None, gt=0, description="Seconds to wait for a peer per message (none: forever)."
    )
    peer_timeout: float | None = Field(
        default=15.0,
        gt=0,
        description="Seconds a send may wait while no peer is connected at all (the buffer"
        " is gone) before the rank fails (none: forever).",
    )
    linger: float = Field(
        default=30.0,
        ge=0,
        description="Seconds allowed at close for peers to acknowledge every byte.",
    )

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        return [_check_url(u, ("tcp", "ipc", "inproc", "tls+tcp", "ws", "wss")) for u in value]


class ZMQPushHandler(Model):
    """Send every message on a ZeroMQ PUSH socket."""

    type: Literal["zmq_push"]
    urls: list[str] = Field(min_length=1, description="tcp://host:port, ipc://path, ...")
    mode: Literal["dial", "listen"] = "dial"
    distribute: bool = True
    send_timeout: float | None = Field(default=None, gt=0)
    peer_timeout: float | None = Field(
        default=15.0,
        gt=0,
        description="Seconds a send may wait while no peer is connected at all (the buffer"
        " is gone) before the rank fails (none: forever).",
    )
    linger: float = Field(
        default=30.0, ge=0, description="Seconds allowed at close for queued messages to leave."
    )
    high_water_mark: int = Field(default=16, gt=0, description="Messages queued per peer.")

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        return [_check_url(u, ("tcp", "ipc", "inproc")) for u in value]


class NullHandler(Model):
    """Count and drop every message (benchmarks)."""

    type: Literal["null"]


DataHandlerConfig = Annotated[
    FileHandler | NNGPushHandler | ZMQPushHandler | NullHandler, Field(discriminator="type")
]

# ---------------------------------------------------------------------------
# Whole configuration
# ---------------------------------------------------------------------------


class PipelineConfig(Model):
    """Everything but `data_handlers`: what a transfer request carries."""

    source_identifier: str = Field(
        default="", description="Free text naming the data, written into every message."
    )
    skip_incomplete_events: bool = Field(
        default=False, description="Skip (and count) events missing a field instead of failing."
    )
    event_source: EventSourceConfig = Field(description="Where events come from (by `type`).")
    data_sources: dict[str, DataSourceConfig] = Field(
        min_length=1, description="Name -> how to take that value from each event."
    )
    processing_pipeline: ProcessingPipelineConfig = Field(
        default_factory=lambda: BatchPipeline(type="batch"), description="Events -> batches."
    )
    data_serializer: SerializerConfig = Field(description="How batches become messages.")

    @field_validator("data_sources")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", name):
                raise ValueError(f"data source name {name!r} must be a plain identifier")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> PipelineConfig:
        problems = cross_field_problems(self)
        if problems:
            text = "; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems)
            raise PydanticCustomError(
                "cross_field", "{text}", {"text": text, "problems": [list(p) for p in problems]}
            )
        return self


class LclstreamerConfig(PipelineConfig):
    """A complete lclstreamer configuration file."""

    data_handlers: list[DataHandlerConfig] = Field(
        min_length=1, description="Every message goes to every handler."
    )

    @field_validator("data_handlers", mode="before")
    @classmethod
    def _yaml_null(cls, value: Any) -> Any:
        """`type: null` in YAML reads as None: treat it as the "null" handler."""
        if isinstance(value, list):
            return [
                {**h, "type": "null"} if isinstance(h, dict) and h.get("type", 0) is None else h
                for h in value
            ]
        return value


Loc = tuple[str | int, ...]


def cross_field_problems(cfg: PipelineConfig) -> list[tuple[Loc, str]]:
    """Problems that involve more than one section, each with its path (empty when consistent)."""
    problems: list[tuple[Loc, str]] = []
    names = set(cfg.data_sources)
    for field in cfg.data_serializer.fields:
        if field not in names:
            problems.append(
                (
                    ("data_serializer", "fields", field),
                    f"{field!r} is not in data_sources (known: {', '.join(sorted(names))})",
                )
            )
    src = cfg.event_source
    provided: set[str] | None = None
    if isinstance(src, SyntheticEventSource):
        provided = set(src.detectors)
    elif isinstance(src, HDF5EventSource):
        provided = set(src.datasets)
    for name, ds in cfg.data_sources.items():
        here: Loc = ("data_sources", name)
        detector_like = isinstance(ds, DetectorData | ScalarData)
        if detector_like and provided is not None and ds.source not in provided:
            problems.append(
                (
                    (*here, "source"),
                    f"{ds.source!r} is not provided by the {src.type} event source"
                    f" (it provides: {', '.join(sorted(provided))})",
                )
            )
        if isinstance(src, HDF5EventSource):
            if isinstance(ds, TimestampData) and src.timestamp is None:
                problems.append(
                    (here, "needs event_source.timestamp (hdf5 files have no implicit time stamps)")
                )
            if isinstance(ds, PhotonEnergyData | WavelengthData) and src.photon_energy_ev is None:
                problems.append((here, "needs event_source.photon_energy_ev"))
            if isinstance(ds, EventCodesData):
                problems.append((here, "the hdf5 event source has no event codes"))
    return problems


def _check_dataset_path(path: str, what: str) -> str:
    if not _DATASET_PATH.match(path):
        raise ValueError(
            f"{what} must be an absolute HDF5 path like /entry_1/data_1/data, got {path!r}"
        )
    return path


def _check_url(url: str, schemes: tuple[str, ...]) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in schemes or not rest:
        raise ValueError(f"{url!r} is not a URL of scheme {', '.join(schemes)}")
    if scheme in ("tcp", "tls+tcp", "ws", "wss"):
        host, colon, port = rest.split("/", 1)[0].rpartition(":")
        if not colon or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{url!r} needs host:port with a port in 1..65535")
    return url


def json_schema() -> dict[str, Any]:
    """The JSON schema of a complete configuration file."""
    return LclstreamerConfig.model_json_schema()
