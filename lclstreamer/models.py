"""Configuration models: the contract of an lclstreamer YAML file.

Every section is a pydantic v2 model with ``extra="forbid"``; sections that
have several implementations are discriminated unions on ``type``.  This module
imports nothing but pydantic, certified's models and the standard library, so the
transfer service can validate requests with it without initialising MPI.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from certified.models import Strict

#: base for every config model: unknown keys are errors.
Model = Strict


DType = Literal[
    "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64"
]

_DATASET_PATH = re.compile(r"^(/[A-Za-z0-9_.\-]+)+$")
_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

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
        default_factory=lambda: {"epix10k2M": SyntheticDetector()},
        description="Simulated detectors; {} gives events with only time stamps, energies "
        "and event codes (for data sources such as random_array).",
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


class HDF5Watch(Model):
    """Live mode: stream files as they appear in a directory, until an end condition.

    A file is taken once it opens and its size and modification time have not changed
    for `settle` seconds, in the order of the file names; rank 0 decides, every rank
    follows (through MPI), so events are numbered the same on every rank.
    """

    poll_interval: float = Field(default=1.0, gt=0, description="Seconds between scans.")
    settle: float = Field(
        default=2.0, ge=0, description="Seconds a file must stay unchanged to count as complete."
    )
    end_marker: str | None = Field(
        default=None,
        description="File whose appearance ends the run (after the files complete by then);"
        " relative to the watched directory.",
    )
    idle_timeout: float | None = Field(
        default=None, gt=0, description="End after this many seconds without a new file."
    )
    max_files: int | None = Field(default=None, gt=0, description="End after this many files.")

    @model_validator(mode="after")
    def _some_end(self) -> HDF5Watch:
        if self.end_marker is None and self.idle_timeout is None and self.max_files is None:
            raise ValueError(
                "give at least one end condition: end_marker, idle_timeout or max_files"
            )
        return self


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
    watch: HDF5Watch | None = Field(
        default=None, description="Live mode: `files` is one glob whose new files are streamed."
    )
    experiment: str = ""
    run: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _watch_glob(self) -> HDF5EventSource:
        if self.watch is not None and not isinstance(self.files, str):
            raise ValueError("with watch, files must be one glob pattern (e.g. /data/run7/*.h5)")
        return self

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
    """LCLS-II data through psana2: a run by experiment and number, or xtc2 files.

    By `experiment`/`run`, psana2 distributes the events over the MPI ranks itself
    (rank 0 reads the small data, rank 1 builds events, ranks 2.. receive them); by
    `files`, every rank reads the files and keeps events r, r + N, ...
    """

    type: Literal["psana2"]
    experiment: str | None = Field(
        default=None, min_length=1, description="Experiment name (psana `exp=`); needs `run`."
    )
    run: int | None = Field(default=None, ge=0, description="Run number (psana `run=`).")
    directory: str | None = Field(
        default=None,
        description="xtc2 directory (psana `dir=`) holding the run's files and their "
        "smalldata/ files; default: the facility's path for the experiment.",
    )
    files: str | list[str] | None = Field(
        default=None,
        description="xtc2 file(s) read directly (psana `files=`), instead of experiment/run.",
    )
    calibration: bool | None = Field(
        default=None,
        description="Load the detectors' calibration constants (from the facility's "
        "database). Default: only for a run named by experiment without `directory` or "
        "`files`; off offline (psana `skip_calib_load='all'`).",
    )
    live: bool = Field(
        default=False, description="Follow a run while the DAQ writes it (psana `live=True`)."
    )
    batch_size: int | None = Field(
        default=None, gt=0, description="Events per batch psana2 sends a rank (psana default)."
    )
    max_events: int | None = Field(
        default=None, gt=0, description="Stop after this many events of the run (like `-n`)."
    )
    ebeam: str = Field(default="ebeam", description="Detector giving the photon energy.")
    timing: str = Field(default="timing", description="Detector giving the event codes.")

    @model_validator(mode="after")
    def _run_or_files(self) -> Psana2EventSource:
        if (self.files is None) == (self.experiment is None):
            raise ValueError("give either experiment and run, or files (not both)")
        if self.experiment is not None and self.run is None:
            raise ValueError("experiment needs run")
        if self.files is not None and (self.run is not None or self.directory is not None):
            raise ValueError("files name the data; run and directory go with experiment")
        if self.files is not None and self.live:
            raise ValueError("live follows a run by experiment and run, not files")
        return self


class SyntheticTofEventSource(Model):
    """Simulated TMO time-of-flight digitizer: N channels x M samples of electron pulses
    (Poisson count per channel, known arrival times) on a noisy baseline."""

    type: Literal["synthetic_tof"]
    number_of_events: int = Field(gt=0, description="Events in the whole run (all ranks).")
    seed: int = Field(default=0, ge=0)
    detector: str = Field(default="tmo_fex", min_length=1, description="Detector name.")
    channels: int = Field(default=16, gt=0, le=1024)
    samples: int = Field(default=4096, ge=16, le=1 << 20)
    pulses_per_channel: float = Field(
        default=4.0, ge=0, description="Mean electrons per channel per event (Poisson)."
    )
    pulse_amplitude: float = Field(default=800.0, gt=0, description="Pulse height (ADU).")
    pulse_sigma: float = Field(default=1.5, gt=0, description="Gaussian pulse width (samples).")
    baseline: float = Field(default=100.0, description="Baseline level (ADU).")
    noise: float = Field(default=8.0, ge=0, description="Gaussian baseline noise (ADU rms).")
    min_separation: float = Field(
        default=12.0, ge=0, description="Minimum distance between pulses of a channel (samples)."
    )
    time_step: float = Field(
        default=0.0,
        ge=0,
        description="Arrival times are multiples of this (samples); 0: continuous.",
    )
    dtype: Literal["int16", "int32", "float32"] = "int16"
    photon_energy_ev: float = Field(default=1200.0, gt=0)
    event_rate_hz: float = Field(default=1_000_000.0, gt=0, description="Nominal rate.")
    start_time: float = Field(default=1_700_000_000.0, ge=0)
    experiment: str = "synthetic"
    run: int = Field(default=1, ge=0)


class StemSectorEventSource(Model):
    """Simulated 4D camera (4D-STEM): every frame is split into `sectors` column blocks,
    each read out by its own receiving server. Rank r streams sector r mod `sectors` of
    frames r // `sectors`, + ranks // `sectors`, ... (the rank count must be a multiple of
    `sectors`). A sector is the dark reference + Gaussian read noise + single-electron
    strikes (Poisson count, known positions, at least 3 pixels apart); a fraction
    `sector_loss` of sectors is lost, as over UDP upstream."""

    type: Literal["stem_sectors"]
    scan_shape: tuple[int, int] = Field(
        description="Scan positions (Nx, Ny): one frame per position, Nx * Ny frames."
    )
    frame_shape: tuple[int, int] = Field(default=(576, 576), description="Frame (rows, cols).")
    sectors: int = Field(default=4, ge=1, le=64, description="Column blocks (one per server).")
    scan_number: int = Field(default=1, ge=0)
    seed: int = Field(default=0, ge=0)
    detector: str = Field(default="4dcamera", min_length=1, description="Detector name.")
    dark_level: float = Field(default=100.0, ge=0, description="Mean dark level (ADU).")
    dark_spread: float = Field(default=5.0, ge=0, description="Pixel-to-pixel dark rms (ADU).")
    noise: float = Field(default=4.0, ge=0, description="Gaussian read noise (ADU rms).")
    electrons_per_frame: float = Field(
        default=40.0, ge=0, description="Dose: mean single-electron strikes per frame (Poisson)."
    )
    electron_adu: float = Field(
        default=28.0, gt=0, description="Signal of one electron at its pixel (ADU)."
    )
    sector_loss: float = Field(
        default=0.0, ge=0, lt=1, description="Fraction of sectors lost before the stream."
    )
    lockstep: int = Field(
        default=32,
        ge=0,
        description="Frames per rank between the ranks' meeting points: no rank runs more"
        " than this ahead of another, as the camera's receiving servers get every frame at"
        " once (0: every rank as fast as it can; producers far apart make consumers park"
        " sectors).",
    )

    @model_validator(mode="after")
    def _shape(self) -> StemSectorEventSource:
        rows, cols = self.frame_shape
        if rows < 3 or cols < 3 or cols % self.sectors:
            raise ValueError(
                f"frame_shape {list(self.frame_shape)}: needs at least 3 x 3 pixels and a"
                f" column count divisible by sectors ({self.sectors})"
            )
        if min(self.scan_shape) < 1:
            raise ValueError(f"scan_shape {list(self.scan_shape)}: both must be >= 1")
        return self


EventSourceConfig = Annotated[
    SyntheticEventSource
    | HDF5EventSource
    | Psana1EventSource
    | Psana2EventSource
    | SyntheticTofEventSource
    | StemSectorEventSource,
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
    field: str | list[str] | None = Field(
        default=None,
        description="psana2 only, instead of `kind`: the detector's method or data field as "
        "a dotted path, e.g. raw.calib, fex.arrayFex (a list stacks several of one shape).",
    )
    dtype: DType | None = Field(default=None, description="Cast to this dtype.")

    @field_validator("field")
    @classmethod
    def _paths(cls, value: str | list[str] | None) -> str | list[str] | None:
        for path in [value] if isinstance(value, str) else value or []:
            if not _FIELD_PATH.match(path):
                raise ValueError(f"{path!r} is not a dotted path like raw.calib or fex.arrayFex")
        if isinstance(value, list) and not value:
            raise ValueError("an empty list names no field")
        return value


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


class RandomArrayData(Model):
    """A fresh random array per event (upstream's GenericRandomNumpyArray): integers
    uniform in 0..254, floats uniform in [0, 1). Reproducible: seeded by (seed, event)."""

    type: Literal["random_array"]
    shape: list[Annotated[int, Field(gt=0)]] = Field(
        min_length=1, max_length=4, description="Shape of one event's array, e.g. [4, 4, 4]."
    )
    dtype: DType = "float32"
    seed: int = Field(default=0, ge=0, description="Same seed, same arrays.")


class SourceIdentifierData(Model):
    """The configuration's `source_identifier` string."""

    type: Literal["source_identifier"]


class RunInfoData(Model):
    """Run information from the event source: experiment name, run number or start time."""

    type: Literal["run_info"]
    key: Literal["experiment", "run", "timestamp"] = Field(
        default="run",
        description="timestamp: the run's start (uint64 seconds << 32 | nanoseconds; psana2).",
    )


DataSourceConfig = Annotated[
    DetectorData
    | ScalarData
    | TimestampData
    | PhotonEnergyData
    | WavelengthData
    | EventIndexData
    | EventCodesData
    | ConstantData
    | RandomArrayData
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

    def outputs(self, inputs: set[str]) -> set[str]:
        return inputs

    def inputs(self) -> list[str]:
        return []


class PeakFinderPipeline(Model):
    """peakfinder8-style Bragg peak finding on one detector field, then batching.

    Adds `<prefix>n_peaks` (int32), `<prefix>peaks` (float32 (max_peaks, 4): fs, ss,
    intensity, pixel count; unused rows NaN) and `<prefix>is_hit` (uint8) to every event.
    """

    type: Literal["peak_finder"]
    field: str = Field(min_length=1, description="Data source holding the frame (2-D or panels).")
    batch_size: int = Field(default=1, gt=0, le=100_000)
    adc_threshold: float = Field(default=0.0, description="Pixels must exceed this value.")
    minimum_snr: float = Field(default=6.0, gt=0, description="Minimum signal-to-noise.")
    min_pixel_count: int = Field(default=2, ge=1)
    max_pixel_count: int = Field(default=200, ge=1)
    local_bg_radius: int = Field(default=3, ge=1, description="Background ring half-width.")
    min_res: float = Field(default=0.0, ge=0, description="Minimum radius (pixels) from centre.")
    max_res: float = Field(default=1e9, gt=0, description="Maximum radius (pixels) from centre.")
    center: list[float] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="[ss, fs] of the beam on each panel (default: the panel centre).",
    )
    iterations: int = Field(default=5, ge=1, le=20, description="Background clipping passes.")
    bad_pixel_mask: str | None = Field(
        default=None, description=".npy file: nonzero = good pixel, shape of one frame."
    )
    max_peaks: int = Field(default=1024, gt=0, le=100_000)
    min_peaks: int = Field(default=10, ge=0, description="A frame with this many peaks is a hit.")
    hits_only: bool = Field(default=False, description="Drop (and count) frames that are not hits.")
    output_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9_.\-]*$")

    @model_validator(mode="after")
    def _ranges(self) -> PeakFinderPipeline:
        if self.min_pixel_count > self.max_pixel_count:
            raise ValueError("min_pixel_count is larger than max_pixel_count")
        if self.min_res >= self.max_res:
            raise ValueError("min_res must be smaller than max_res")
        return self

    def outputs(self, inputs: set[str]) -> set[str]:
        p = self.output_prefix
        return inputs | {f"{p}n_peaks", f"{p}peaks", f"{p}is_hit"}

    def inputs(self) -> list[str]:
        return [self.field]


class PeaknetPipeline(Model):
    """Images for PeakNet/MAXIE training: pad (never crop silently), channel axis,
    per-image normalization; adds `<field>_original_shape` (int32) per event."""

    type: Literal["peaknet"]
    field: str = Field(min_length=1, description="Data source holding the image.")
    batch_size: int = Field(default=16, gt=0, le=100_000)
    target_height: int = Field(gt=0)
    target_width: int = Field(gt=0)
    pad_style: Literal["center", "bottom_right"] = "center"
    pad_value: float = 0.0
    crop: bool = Field(default=False, description="Crop frames larger than the target.")
    add_channel_dim: bool = False
    num_channels: int = Field(default=1, gt=0, description="Repeat the image over channels.")
    normalize: bool = Field(default=False, description="(x - mean) / (std + eps) per image.")
    eps: float = Field(default=1e-6, gt=0)
    dtype: Literal["float32", "float64"] = "float32"
    geometry: str | None = Field(
        default=None,
        description="CrystFEL .geom file: the frame's panels are assembled into one image"
        " (nearest pixel) before padding; pixels no panel covers get pad_value.",
    )

    def outputs(self, inputs: set[str]) -> set[str]:
        return inputs | {f"{self.field}_original_shape"}

    def inputs(self) -> list[str]:
        return [self.field]


class TofPipeline(Model):
    """Electron time-of-flight reduction of digitizer waveforms (N channels x M samples).

    `output` picks what each event carries: `raw` waveforms; `windows` above `threshold`
    (`tof_windows` (max_windows, pre+post), `tof_window_start`, `tof_window_channel`,
    `tof_n_windows`); `arrivals` (`tof_times` float32 sub-sample arrival times,
    `tof_channels` int16, `tof_n_hits`); `histograms`: one record per
    `histogram_every` events (`tof_histogram` (channels, bins) uint32, `tof_first_event`,
    `tof_n_events`). The run summary reports the bytes of every stage.
    """

    type: Literal["tof"]
    field: str = Field(min_length=1, description="Data source holding the waveforms.")
    output: Literal["raw", "windows", "arrivals", "histograms"] = "arrivals"
    batch_size: int = Field(default=64, gt=0, le=1_000_000)
    threshold: float = Field(description="Level above the baseline that marks a pulse (ADU).")
    baseline_samples: int = Field(
        default=64, ge=1, description="Leading samples whose median is the baseline."
    )
    pre_samples: int = Field(default=4, ge=0, description="Window samples before a crossing.")
    post_samples: int = Field(default=12, ge=1, description="Window samples from a crossing.")
    max_windows: int = Field(default=256, gt=0, description="Windows kept per event.")
    max_hits: int = Field(default=256, gt=0, description="Arrival times kept per event.")
    histogram_bins: int = Field(default=256, gt=0)
    histogram_range: list[float] | None = Field(
        default=None, min_length=2, max_length=2, description="[first, last) sample (default all)."
    )
    histogram_every: int = Field(default=100, gt=0, description="Events per histogram record.")

    def outputs(self, inputs: set[str]) -> set[str]:
        extra = {
            "raw": set(),
            "windows": {"tof_windows", "tof_window_start", "tof_window_channel", "tof_n_windows"},
            "arrivals": {"tof_times", "tof_channels", "tof_n_hits"},
            "histograms": {"tof_histogram", "tof_first_event", "tof_n_events"},
        }[self.output]
        if self.output == "histograms":
            return extra
        return (inputs - {self.field} if self.output != "raw" else inputs) | extra

    def inputs(self) -> list[str]:
        return [self.field]


ProcessingPipelineConfig = Annotated[
    BatchPipeline | PeakFinderPipeline | PeaknetPipeline | TofPipeline,
    Field(discriminator="type"),
]

Compression = Literal[
    "none", "gzip", "gzip_with_shuffle", "bitshuffle_lz4", "bitshuffle_zstd", "zfp"
]

_LEVELS: dict[str, tuple[int, int] | None] = {
    "none": None,
    "gzip": (0, 9),
    "gzip_with_shuffle": (0, 9),
    "bitshuffle_lz4": None,
    "bitshuffle_zstd": (1, 22),
    "zfp": None,  # per zfp_mode: see _ZFP_LEVELS
}

#: compression_level per zfp mode: rate = compressed bits per value, precision = bit
#: planes kept, accuracy = n for an absolute error tolerance of 2**-n; reversible: none.
_ZFP_LEVELS: dict[str, tuple[int, int] | None] = {
    "reversible": None,
    "rate": (1, 64),
    "precision": (1, 64),
    "accuracy": (-64, 64),
}


class HDF5Serializer(Model):
    """One in-memory HDF5 file per batch; datasets (B, ...), chunked by event if compressed."""

    type: Literal["hdf5"]
    fields: dict[str, str] = Field(
        min_length=1, description="Data source name -> dataset path in the file."
    )
    compression: Compression = "none"
    compression_level: int | None = Field(
        default=None,
        description="gzip: 0-9 (default 4); bitshuffle_zstd: 1-22 (default 3); zfp: see zfp_mode.",
    )
    zfp_mode: Literal["reversible", "rate", "precision", "accuracy"] = Field(
        default="reversible",
        description="compression: zfp only. reversible is lossless (no level); rate: "
        "compression_level compressed bits per value (1-64); precision: bit planes kept "
        "(1-64); accuracy: absolute error at most 2**-compression_level (-64..64). Arrays "
        "must be float32, float64, int32 or int64.",
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
        zfp = self.compression == "zfp"
        if not zfp and "zfp_mode" in self.model_fields_set:
            raise ValueError(f"zfp_mode is for compression zfp, not {self.compression!r}")
        allowed = _ZFP_LEVELS[self.zfp_mode] if zfp else _LEVELS[self.compression]
        what = f"zfp {self.zfp_mode}" if zfp else self.compression
        if self.compression_level is None:
            if zfp and allowed is not None:
                raise ValueError(f"zfp {self.zfp_mode} needs a compression_level")
            return self
        if allowed is None:
            raise ValueError(f"compression {what!r} takes no compression_level")
        lo, hi = allowed
        if not lo <= self.compression_level <= hi:
            raise ValueError(
                f"compression_level {self.compression_level} is outside {lo}..{hi} for {what}"
            )
        return self

    def referenced(self) -> list[str]:
        return list(self.fields)


def _check_keys(value: dict[str, str], what: str) -> dict[str, str]:
    """Keys of a message map: non-empty, unique, none a prefix of another (CrystFEL's msgpack
    reader matches keys by prefix)."""
    keys = list(value.values())
    for k in keys:
        if not k:
            raise ValueError(f"{what}: empty key")
    if len(set(keys)) != len(keys):
        raise ValueError(f"{what}: two fields map to the same key")
    for a in keys:
        for b in keys:
            if a != b and b.startswith(a):
                raise ValueError(f"{what}: key {a!r} is a prefix of {b!r}; rename one")
    return value


class MsgpackSerializer(Model):
    """One msgpack map per event, the layout CrystFEL's `--data-format=msgpack` reads.

    Arrays become `{"type": "<f4"|"<i4", "shape": [...], "data": <bin>}` (frames of more
    than 2 dimensions are stacked into 2-D: panels one below the other); numbers and
    strings are plain msgpack values.
    """

    type: Literal["msgpack"]
    fields: dict[str, str] = Field(
        min_length=1, description="Data source name -> key in the message map."
    )
    array_dtype: Literal["auto", "float32", "int32"] = Field(
        default="auto",
        description="auto: integers that fit int32 as <i4, everything else as <f4.",
    )

    @field_validator("fields")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_keys(value, "fields")

    def referenced(self) -> list[str]:
        return list(self.fields)


class SimplonSerializer(Model):
    """The DECTRIS Stream V2 format (CBOR, SIMPLON API 1.8): one `start` message per run
    (rank 0, before any image), one `image` message per event, one `end` message per run
    after every rank finished (coordinated through MPI)."""

    type: Literal["simplon"]
    image: str = Field(min_length=1, description="Data source holding the 2-D frame.")
    channel: str = Field(default="threshold_1", min_length=1)
    compression: Literal["bslz4", "lz4", "none"] = "bslz4"
    dtype: Literal["uint8", "uint16", "uint32", "int32", "float32"] | None = Field(
        default=None, description="Cast frames to this dtype (default: keep theirs)."
    )
    series_id: int = Field(default=1, ge=0)
    incident_energy_ev: float = Field(default=9500.0, gt=0)
    detector_distance_m: float = Field(default=0.1, gt=0)
    beam_center_x: float | None = Field(default=None, description="Pixels (default: centre).")
    beam_center_y: float | None = Field(default=None, description="Pixels (default: centre).")
    pixel_size_m: float = Field(default=75e-6, gt=0)
    count_time: float = Field(default=0.001, gt=0, description="Exposure per image (s).")
    frame_time: float = Field(default=0.001, gt=0, description="Time between images (s).")
    sensor_material: str = "Si"
    sensor_thickness_m: float = Field(default=450e-6, gt=0)
    detector_description: str = "lclstreamer"
    saturation_value: int | None = Field(default=None, ge=0)
    user_data: dict[str, str] = Field(
        default_factory=dict, description="Data source name -> key in each image's user_data."
    )
    start_user_data: dict[str, str | float | list[float]] = Field(
        default_factory=dict,
        description="Constant entries added to the start message's user_data (besides "
        "compression and dtype), e.g. {polarization_fraction: 0.99}.",
    )

    @field_validator("start_user_data")
    @classmethod
    def _own_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        taken = sorted({"compression", "dtype"} & set(value))
        if taken:
            raise ValueError(f"{', '.join(taken)}: set by the serializer itself")
        return value

    def referenced(self) -> list[str]:
        return [self.image, *self.user_data]


class NumpySerializer(Model):
    """One message per batch: a small JSON header (names, dtypes, shapes, sizes) and the
    raw arrays, each optionally LZ4 or zstd compressed."""

    type: Literal["numpy"]
    fields: dict[str, str] = Field(min_length=1, description="Data source name -> array name.")
    compression: Literal["none", "lz4", "zstd"] = "none"
    compression_level: int | None = Field(default=None, ge=1, le=22, description="zstd only.")

    @model_validator(mode="after")
    def _level(self) -> NumpySerializer:
        if self.compression_level is not None and self.compression != "zstd":
            raise ValueError(f"compression {self.compression!r} takes no compression_level")
        return self

    def referenced(self) -> list[str]:
        return list(self.fields)


class StemSectorSerializer(Model):
    """One two-part message per event, as the 4D camera's receiving servers send them: a
    msgpack map `{scan_number, frame_number, sector, shape, dtype}` followed, in the same
    message, by the sector's raw array (C order); `zmq_push` sends the two as two ZMQ
    parts (its `multipart`). Route it with `nngstream --route-by frame_number`."""

    type: Literal["stem_sector"]
    image: str = Field(default="sector", description="Data source of the sector array.")
    frame_number: str = Field(default="frame_number", description="Data source of the frame.")
    sector: str = Field(default="sector_index", description="Data source of the sector index.")
    scan_number: str = Field(default="scan_number", description="Data source of the scan.")

    def referenced(self) -> list[str]:
        return [self.image, self.frame_number, self.sector, self.scan_number]


SerializerConfig = Annotated[
    HDF5Serializer | MsgpackSerializer | SimplonSerializer | NumpySerializer | StemSectorSerializer,
    Field(discriminator="type"),
]


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
    multipart: bool | None = Field(
        default=None,
        description="Send each message as a two-part ZMQ message split after its leading"
        " msgpack header (the 4D camera's wire format). Default: yes with the stem_sector"
        " serializer, else no.",
    )

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        return [_check_url(u, ("tcp", "ipc", "inproc")) for u in value]


class NullHandler(Model):
    """Count and drop every message (benchmarks)."""

    type: Literal["null"]


class ZMQRepHandler(Model):
    """Answer each consumer request (a ZeroMQ REQ socket, e.g. CrystFEL's
    `--zmq-request=next`) with the next message of any rank.

    Rank 0 binds `url` for the consumers and `backend_url` for the ranks; a rank is
    handed a request only while it holds a message, so no request waits on a rank that
    has finished. At the end of the run, requests nobody can answer are counted and
    logged (their consumers wait for more data).
    """

    type: Literal["zmq_rep"]
    url: str = Field(description="tcp://host:port the consumers connect to (rank 0 binds it).")
    backend_url: str | None = Field(
        default=None,
        description="tcp://host:port where the ranks reach rank 0 (default: the port after "
        "url's, on url's host, or 127.0.0.1 when url binds every interface).",
    )
    request_timeout: float | None = Field(
        default=None, gt=0, description="Seconds a rank waits for a request (none: forever)."
    )
    linger: float = Field(default=30.0, ge=0, description="Seconds allowed at close.")

    @field_validator("url", "backend_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value.replace("*", "0.0.0.0"), ("tcp",))


class ZMQPubHandler(Model):
    """Publish every message on a ZeroMQ PUB socket, after a `topic` part when one is set
    (CrystFEL's `--zmq-subscribe=TOPIC`)."""

    type: Literal["zmq_pub"]
    urls: list[str] = Field(min_length=1, description="tcp://host:port, ipc://path, ...")
    mode: Literal["dial", "listen"] = "listen"
    distribute: bool = Field(default=True, description="Rank r uses only urls[r % len(urls)].")
    topic: str = Field(default="", description="Sent as a first message part when not empty.")
    high_water_mark: int = Field(default=1000, gt=0, description="Messages queued per peer.")
    linger: float = Field(default=5.0, ge=0)

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        return [_check_url(u.replace("*", "0.0.0.0"), ("tcp", "ipc", "inproc")) for u in value]


DataHandlerConfig = Annotated[
    FileHandler | NNGPushHandler | ZMQPushHandler | NullHandler | ZMQRepHandler | ZMQPubHandler,
    Field(discriminator="type"),
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

    @model_validator(mode="after")
    def _zmq_parts(self) -> LclstreamerConfig:
        """zmq_push sends stem_sector messages as two parts unless told otherwise; only
        messages that start with a msgpack header can be split so."""
        stem = self.data_serializer.type == "stem_sector"
        for i, h in enumerate(self.data_handlers):
            if h.type != "zmq_push":
                continue
            if h.multipart is None:
                h.multipart = stem
            elif h.multipart and not stem:
                raise PydanticCustomError(
                    "multipart",
                    "data_handlers.{i}.multipart: only stem_sector messages (a msgpack"
                    " header, then the array) can be sent as two parts, not {kind}",
                    {"i": i, "kind": self.data_serializer.type},
                )
        return self


Loc = tuple[str | int, ...]


def cross_field_problems(cfg: PipelineConfig) -> list[tuple[Loc, str]]:
    """Problems that involve more than one section, each with its path (empty when consistent)."""
    problems: list[tuple[Loc, str]] = []
    inputs = set(cfg.data_sources)
    pipe = cfg.processing_pipeline
    for field in pipe.inputs():
        if field not in inputs:
            problems.append(
                (
                    ("processing_pipeline", "field"),
                    f"{field!r} is not in data_sources (known: {', '.join(sorted(inputs))})",
                )
            )
    names = pipe.outputs(inputs)
    made = "" if pipe.type == "batch" else f" nor made by the {pipe.type} pipeline"
    for field in cfg.data_serializer.referenced():
        if field not in names:
            problems.append(
                (
                    ("data_serializer", *_field_loc(cfg.data_serializer, field)),
                    f"{field!r} is not in data_sources{made} (known: {', '.join(sorted(names))})",
                )
            )
    src = cfg.event_source
    if isinstance(src, HDF5EventSource) and src.watch and cfg.data_serializer.type == "simplon":
        problems.append(
            (
                ("data_serializer", "type"),
                "simplon needs rank 0's first frame before any rank streams, which a watched"
                " directory (event_source.watch) cannot give; use static files",
            )
        )
    provided: set[str] | None = None
    if isinstance(src, SyntheticEventSource):
        provided = set(src.detectors)
    elif isinstance(src, HDF5EventSource):
        provided = set(src.datasets)
    elif isinstance(src, SyntheticTofEventSource):
        provided = {src.detector}
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
        psana2 = isinstance(src, Psana2EventSource)
        if isinstance(ds, DetectorData) and ds.field is not None and not psana2:
            problems.append(((*here, "field"), "field is for the psana2 event source only"))
        if isinstance(ds, RunInfoData) and ds.key == "timestamp" and not psana2:
            problems.append(((*here, "key"), "the run's timestamp comes from psana2 only"))
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


def _field_loc(ser: Any, field: str) -> Loc:
    """Where a serializer names a field (for error locations)."""
    if getattr(ser, "image", None) == field:
        return ("image",)
    if field in getattr(ser, "user_data", {}):
        return ("user_data", field)
    return ("fields", field)


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
