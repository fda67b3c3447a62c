"""Benchmark: the science layers of lclstreamer, each paired with its baseline in one run.

- peak finding on 1024 x 1024 float32 frames (30 Bragg peaks on Poisson background):
  our `peak_finder` vs OM's peakfinder8 (the compiled routine of the `ondamonitor`
  package), same frames and parameters; frames/s.
- ToF: the `tof` pipeline (arrivals) on 16 x 4096 int16 digitizer waveforms vs a bare
  numpy loop that only subtracts the baseline and finds threshold crossings;
  waveforms/s, and the bytes per stage the pipeline counted.
- msgpack: our serializer (CrystFEL layout) vs a bare `msgpack.packb` loop building the
  same map from the same arrays; simplon: our serializer (bslz4) vs a bare loop doing
  the same bitshuffle-LZ4 compression and `cbor2.dumps`; MB/s of frame data.
Each pair alternates single runs REPEATS times (default 7); each figure is the best
run. Prints Markdown.
"""

from __future__ import annotations

import os
import platform
import time

import cbor2
import msgpack
import numpy as np

from lclstreamer.models import BatchPipeline as BatchConfig
from lclstreamer.models import MsgpackSerializer as MsgpackConfig
from lclstreamer.models import PeakFinderPipeline as PeakFinderConfig
from lclstreamer.models import SimplonSerializer as SimplonConfig
from lclstreamer.models import SyntheticEventSource, SyntheticTofEventSource
from lclstreamer.models import TofPipeline as TofConfig
from lclstreamer.pipeline import BatchPipeline
from lclstreamer.pipelines.peakfinder import PeakFinder, make_geometry
from lclstreamer.pipelines.tof import TofPipeline
from lclstreamer.protocols import Event, RunInfo, StreamContext
from lclstreamer.serializers.msgpack import MsgpackSerializer
from lclstreamer.serializers.simplon import SimplonSerializer, bslz4
from lclstreamer.sources.synthetic import SyntheticSource
from lclstreamer.sources.tof import SyntheticTofSource

REPEATS = int(os.environ.get("BENCH_REPEATS", "7"))
CTX = StreamContext(0, 1, "bench")


def pair(ours, baseline, n_items: float) -> tuple[float, float]:
    """Items per second of the fastest run of each, runs alternating (ours, baseline)
    REPEATS times, so both see the same machine load."""
    rates: tuple[list[float], list[float]] = ([], [])
    for _ in range(REPEATS):
        for fn, out in ((ours, rates[0]), (baseline, rates[1])):
            t0 = time.perf_counter()
            fn()
            out.append(n_items / (time.perf_counter() - t0))
    return max(rates[0]), max(rates[1])


def area_frames(n: int, shape, dtype: str) -> list[np.ndarray]:
    cfg = SyntheticEventSource(
        type="synthetic",
        number_of_events=n,
        seed=2,
        pool_size=0,
        detectors={"d": {"shape": shape, "dtype": dtype, "peaks": 30, "peak_intensity": 200.0}},
    )
    src = SyntheticSource(cfg, CTX)
    return [src.frame("d", i) for i in range(n)]


def bench_peaks(rows: list[str]) -> None:
    try:
        from om.algorithms._crystallography import peakfinder_8
    except ImportError:
        rows.append("| peak finder | OM (ondamonitor) not installed | | |")
        return
    frames = area_frames(10, [1024, 1024], "float32")
    cfg = PeakFinderConfig(type="peak_finder", field="d", adc_threshold=20.0)
    finder = PeakFinder(cfg, make_geometry((1024, 1024), None, None, cfg))
    out = np.empty((cfg.max_peaks, 4), np.float32)
    yy, xx = np.mgrid[0:1024, 0:1024]
    radius = np.hypot(yy - 511.5, xx - 511.5).astype(np.float32)
    mask = np.ones((1024, 1024), np.int8)

    def ours():
        for f in frames:
            finder(f, out)

    def om():
        for f in frames:
            peakfinder_8(
                cfg.max_peaks, f.astype(np.float32), mask, radius, 0, None, None, 0,
                1024, 1024, 1, 1, cfg.adc_threshold, cfg.minimum_snr,
                cfg.min_pixel_count, cfg.max_pixel_count, cfg.local_bg_radius,
            )  # fmt: skip

    a, b = pair(ours, om, len(frames))
    rows.append(
        f"| peak finder 1024x1024 | {a:.1f} frames/s | OM peakfinder8 {b:.1f} frames/s"
        f" | {a / b:.2f}x |"
    )


def bench_tof(rows: list[str]) -> None:
    src_cfg = SyntheticTofEventSource(type="synthetic_tof", number_of_events=200, seed=1)
    src = SyntheticTofSource(src_cfg, CTX)
    waves = [src.waveforms(i) for i in range(src_cfg.number_of_events)]
    cfg = TofConfig(type="tof", field="w", threshold=200.0, batch_size=64)
    counters: dict[str, int] = {}

    def ours():
        pipe = TofPipeline(cfg, None)
        for _ in pipe(iter(Event(i, {"w": w}) for i, w in enumerate(waves))):
            pass
        counters.update(pipe.counters())

    def bare():
        for w in waves:
            s = w.astype(np.float32) - np.median(w[:, :64], axis=1)[:, None]
            above = s > 200.0
            np.nonzero(above[:, 1:] & ~above[:, :-1])

    a, b = pair(ours, bare, len(waves))
    rows.append(
        f"| tof arrivals 16x4096 int16 | {a:.0f} waveforms/s | bare numpy crossings"
        f" {b:.0f} waveforms/s | {a / b:.2f}x |"
    )
    n = counters["tof.events"]
    per = {k.split(".")[1]: v / n for k, v in counters.items() if k.endswith("bytes")}
    rows.append(
        "| tof bytes per event | "
        + ", ".join(f"{k} {v:.0f}" for k, v in per.items())
        + f" | raw/arrivals {per['raw_bytes'] / per['arrival_bytes']:.0f}x | |"
    )


def bench_msgpack(rows: list[str]) -> None:
    frames = area_frames(8, [1024, 1024], "float32")
    mb = sum(f.nbytes for f in frames) / 1e6
    cfg = MsgpackConfig(
        type="msgpack", fields={"img": "data", "e": "photon_energy_ev", "i": "event_index"}
    )
    events = [Event(i, {"img": f, "e": np.float64(9500.0), "i": np.uint64(i)})
              for i, f in enumerate(frames)]  # fmt: skip

    def ours():
        ser = MsgpackSerializer(cfg, CTX, RunInfo("b", 1))
        batches = BatchPipeline(BatchConfig(type="batch", batch_size=1), None)(iter(events))
        for _ in ser(batches):
            pass

    def bare():
        for i, f in enumerate(frames):
            msgpack.packb(
                {
                    "data": {"type": "<f4", "shape": list(f.shape), "data": f.tobytes()},
                    "photon_energy_ev": 9500.0,
                    "event_index": i,
                }
            )

    a, b = pair(ours, bare, mb)
    rows.append(
        f"| msgpack serializer (4 MB frames) | {a:.0f} MB/s | bare msgpack.packb {b:.0f} MB/s"
        f" | {a / b:.2f}x |"
    )


def bench_simplon(rows: list[str]) -> None:
    frames = area_frames(8, [1024, 1024], "uint16")
    mb = sum(f.nbytes for f in frames) / 1e6
    cfg = SimplonConfig(type="simplon", image="img")
    events = [Event(i, {"img": f}) for i, f in enumerate(frames)]

    def ours():
        ser = SimplonSerializer(cfg, CTX, RunInfo("b", 1))
        ser.join("2026-01-01T00:00:00Z")
        batches = BatchPipeline(BatchConfig(type="batch", batch_size=4), None)(iter(events))
        for _ in ser(batches):
            pass

    def bare():
        tag = cbor2.CBORTag
        for i, f in enumerate(frames):
            data = tag(40, [list(f.shape), tag(69, tag(56500, ["bslz4", 2, bslz4(f)]))])
            cbor2.dumps({"type": "image", "image_id": i, "data": {"threshold_1": data}})

    a, b = pair(ours, bare, mb)
    rows.append(
        f"| simplon serializer bslz4 (2 MB frames) | {a:.0f} MB/s | bare bslz4 + cbor2.dumps"
        f" {b:.0f} MB/s | {a / b:.2f}x |"
    )


def main() -> None:
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs")
    rows = ["| what | lclstreamer | baseline (same run) | ratio |", "|---|---|---|---|"]
    bench_peaks(rows)
    bench_tof(rows)
    bench_msgpack(rows)
    bench_simplon(rows)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
