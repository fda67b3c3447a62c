"""Benchmark: lclstreamer vs a minimal h5py loop, in one run.

Synthetic epix10k2M-sized float32 events (16 x 352 x 384, 8.65 MB), batches of
10, HDF5 serializer (compression none, bitshuffle_lz4 and zfp reversible; choose
with BENCH_COMPRESSIONS=none,zfp) into the `null` handler. Baselines, in this
process: the same arrays written straight into an in-memory h5py file per batch
by a minimal loop (BytesIO, the obvious way), and the same loop writing into
lclstreamer's reusable MemoryFile; both write the serializer's layout (one chunk per
event when compressed, contiguous when not). The engine runs under `mpirun -n 1` and
`mpirun -n 2`; its rate comes from its own summary (streaming time, after the
set-up that builds the synthetic frame pool). The four measurements are
interleaved REPEATS times; each figure is the best of its runs. Prints a
Markdown table.
"""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import yaml

from lclstreamer.memfile import MemoryFile
from lclstreamer.models import SyntheticEventSource
from lclstreamer.protocols import StreamContext
from lclstreamer.serializers.hdf5 import filter_options
from lclstreamer.sources.synthetic import SyntheticSource

BIN = Path(sys.executable).parent
SHAPE = [16, 352, 384]
BATCH = 10
EVENTS = int(os.environ.get("BENCH_EVENTS", "400"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
COMPRESSIONS = os.environ.get("BENCH_COMPRESSIONS", "none,bitshuffle_lz4,zfp").split(",")
EVENT_MB = np.prod(SHAPE) * 4 / 1e6


def config(compression: str) -> dict:
    return {
        "source_identifier": "bench",
        "event_source": {
            "type": "synthetic",
            "number_of_events": EVENTS,
            "seed": 1,
            "detectors": {"epix10k2M": {"shape": SHAPE, "dtype": "float32"}},
        },
        "data_sources": {"frames": {"type": "detector", "source": "epix10k2M"}},
        "processing_pipeline": {"type": "batch", "batch_size": BATCH},
        "data_serializer": {
            "type": "hdf5",
            "compression": compression,
            "fields": {"frames": "/entry_1/data_1/data"},
        },
        "data_handlers": [{"type": "null"}],
    }


def frames() -> list[np.ndarray]:
    """The arrays the synthetic source gives events 0..EVENTS-1 (views of its frame pool)."""
    cfg = SyntheticEventSource.model_validate(config("none")["event_source"])
    src = SyntheticSource(cfg, StreamContext(0, 1, "bench"))
    return [e.detector("epix10k2M", "calib") for e in src.events()]


def baseline(arrays: list[np.ndarray], compression: str, reuse: bool) -> float:
    """Events/s of a minimal loop: one in-memory h5py file per batch of 10 arrays."""
    filters = filter_options(compression, None)
    memfile = MemoryFile()
    total = 0
    start = time.perf_counter()
    for b in range(0, len(arrays), BATCH):
        batch = arrays[b : b + BATCH]
        if reuse:
            memfile.reset()
            memfile.reserve(len(batch) * batch[0].nbytes + (1 << 16))
            target = memfile
        else:
            target = io.BytesIO()
        with h5py.File(target, "w") as f:
            f.attrs["first_event"] = b
            d = f.create_dataset(
                "/entry_1/data_1/data",
                shape=(len(batch), *SHAPE),
                dtype=np.float32,
                chunks=(1, *SHAPE) if filters else None,  # the serializer's layout
                **filters,
            )
            for j, a in enumerate(batch):
                d[j] = a
        total += len(memfile.view() if reuse else target.getbuffer())
    return len(arrays) / (time.perf_counter() - start)


def engine(compression: str, ranks: int, workdir: Path) -> dict:
    path = workdir / f"bench-{compression}.yaml"
    path.write_text(yaml.safe_dump(config(compression)))
    cmd = [
        str(BIN / "mpirun"),
        "-n",
        str(ranks),
        str(BIN / "lclstreamer"),
        "-c",
        str(path),
        "--no-progress",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rate(result: float | dict) -> float:
    return result if isinstance(result, float) else result["events/s"]


def main() -> None:
    load_before = os.getloadavg()[0]
    arrays = frames()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for compression in COMPRESSIONS:
            runs: dict[str, list] = {"base": [], "reuse": [], "one": [], "two": []}
            for _ in range(REPEATS):  # interleaved, so slow phases of the machine hit all four
                runs["base"].append(baseline(arrays, compression, reuse=False))
                runs["reuse"].append(baseline(arrays, compression, reuse=True))
                runs["one"].append(engine(compression, 1, Path(tmp)))
                runs["two"].append(engine(compression, 2, Path(tmp)))
            best = {k: max(v, key=_rate) for k, v in runs.items()}
            rows.append((compression, best["base"], best["reuse"], best["one"], best["two"]))
    print(
        f"# {EVENTS} events of {SHAPE} float32 ({EVENT_MB:.2f} MB), batch {BATCH}, null handler,"
        f" best of {REPEATS} interleaved runs; {platform.machine()}, {os.cpu_count()} cores,"
        f" load average before/after {load_before:.1f}/{os.getloadavg()[0]:.1f};"
        f" Python {platform.python_version()}, h5py {h5py.__version__}"
    )
    print(
        "| compression | baseline BytesIO ev/s | baseline MemoryFile ev/s | lclstreamer 1 rank"
        " ev/s (input MB/s, output MB/s) | 1 rank / baseline | lclstreamer 2 ranks ev/s |"
        " 2 ranks / 1 rank | events per CPU-second, 1 rank / 2 ranks |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for compression, base, reuse, one, two in rows:
        e1, e2 = one["events/s"], two["events/s"]
        c1, c2 = (r["events"] / r["cpu_seconds"] for r in (one, two))
        print(
            f"| {compression} | {base:.0f} | {reuse:.0f} | {e1:.0f} ({e1 * EVENT_MB:.0f},"
            f" {one['MB/s']:.0f}) | {e1 / base:.2f} (vs MemoryFile loop {e1 / reuse:.2f}) |"
            f" {e2:.0f} | {e2 / e1:.2f} | {c1:.0f} / {c2:.0f} |"
        )


if __name__ == "__main__":
    main()
