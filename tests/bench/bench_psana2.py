"""Benchmark: lclstreamer's psana2 source vs a bare psana2 loop, same run, same detectors.

psana's own xtcwriter + smdwriter write one run of EVENTS events (xppcspad area detector,
xpphsd digitizer raw + fex segments). Both sides read, per event: the timestamp,
xppcspad calib, xpphsd raw array0Pgp and fex arrayFex (segments stacked). Both
materialize every array: psana computes calib, and the digitizer segments are stacked
into new arrays (np.stack), on both sides. lclstreamer then batches them (BATCH
events), copies them into one HDF5 image per batch and hands it to the `null` handler;
the bare loop keeps nothing. Serial: `files=` (psana's single-file reader) under
`mpirun -n 1`. MPI: `exp=/run=/dir=` under `mpirun -n 4` (psana2's own partition:
smd0, event builder, 2 big-data ranks). Both sides read every run of the data, the
idiomatic `for run in ds.runs()` loop: after the last event, asking psana2 for the next
run costs about 1 s with `files=` (its reader waits on the end of the file), which
lclstreamer pays as every complete reader must; a bare loop that stopped after the
first run would not. Rates count the streaming loop only (after DataSource and
first-run set-up): events per wall second of the slowest rank, and
events per CPU second of all ranks (which a shared machine disturbs less). The four
measurements, and a fifth that runs lclstreamer's psana2 source and data sources alone
(no batching, no serialization: what the psana2 adapter itself adds), are interleaved
REPEATS times; each figure is the best of its runs.
Needs the psana extra. Prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
EVENTS = int(os.environ.get("BENCH_EVENTS", "20000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
BATCH = int(os.environ.get("BENCH_BATCH", "100"))
PSANA_BATCH = 100  # events psana2's event builder sends a big-data rank at a time

BARE = """
import json, sys, time
import numpy as np
from mpi4py import MPI
from psana import DataSource
from lclstreamer.sources.psana2 import tolerate_offline_logbook
import psana

mode, where = sys.argv[1], sys.argv[2]
if mode == "files":
    ds = DataSource(files=where, skip_calib_load="all")
else:
    tolerate_offline_logbook(psana)
    ds = DataSource(exp="xpptut15", run=14, dir=where, skip_calib_load="all",
                    batch_size=int(sys.argv[3]))
runs = ds.runs()
run = next(runs)
cs, hsd = run.Detector("xppcspad"), run.Detector("xpphsd")
n, t0, c0 = 0, time.perf_counter(), time.process_time()
while run is not None:
    for evt in run.events():
        ts = evt.timestamp
        calib = cs.raw.calib(evt)
        raw, fex = hsd.raw._segments(evt), hsd.fex._segments(evt)
        wave = np.stack([raw[k].array0Pgp for k in sorted(raw)])
        peaks = np.stack([fex[k].arrayFex for k in sorted(fex)])
        n += 1
    run = next(runs, None)  # is there another run? (every complete reader asks)
    if run is not None:
        cs, hsd = run.Detector("xppcspad"), run.Detector("xpphsd")
seconds = time.perf_counter() - t0 if n else 0.0
everyone = MPI.COMM_WORLD.gather((n, seconds, time.process_time() - c0))
if MPI.COMM_WORLD.Get_rank() == 0:
    print(json.dumps({"events": sum(e[0] for e in everyone),
                      "seconds": max(e[1] for e in everyone),
                      "cpu_seconds": sum(e[2] for e in everyone)}))
"""

# lclstreamer's psana2 source and data sources alone (no batching, no serializer)
EXTRACT = """
import json, sys, time
from lclstreamer.config import load_config
from lclstreamer.engine import extract
from lclstreamer.protocols import StreamContext
from lclstreamer.registry import build
from lclstreamer.stats import RankStats

cfg = load_config(sys.argv[1])
ctx = StreamContext(0, 1, "bench")
source = build("event_source", cfg.event_source, ctx)
run = source.run_info()
sources = {k: build("data_sources", v, ctx, run) for k, v in cfg.data_sources.items()}
n, t0, c0 = 0, time.perf_counter(), time.process_time()
for _ in extract(source.events(), sources, False, RankStats()):
    n += 1
print(json.dumps({"events": n, "seconds": time.perf_counter() - t0,
                  "cpu_seconds": time.process_time() - c0}))
"""


def psana_tools() -> Path:
    import psana

    return Path(psana.__file__).resolve().parents[1] / "bin"


def write_run(root: Path) -> Path:
    (root / "smalldata").mkdir()
    data = root / "xpptut15-r0014-s000-c000.xtc2"
    tools = psana_tools()
    subprocess.run(
        [tools / "xtcwriter", "-f", data, "-t", "-n", str(EVENTS)], check=True, capture_output=True
    )
    smd = root / "smalldata" / (data.stem + ".smd.xtc2")
    subprocess.run([tools / "smdwriter", "-f", data, "-o", smd], check=True, capture_output=True)
    return data


def config(source: dict) -> dict:
    fields = {
        "timestamp": {"type": "timestamp"},
        "calib": {"type": "detector", "source": "xppcspad", "kind": "calib"},
        "wave": {"type": "detector", "source": "xpphsd", "field": "raw.array0Pgp"},
        "fex": {"type": "detector", "source": "xpphsd", "field": "fex.arrayFex"},
    }
    return {
        "source_identifier": "bench",
        "event_source": {"type": "psana2", **source},
        "data_sources": fields,
        "processing_pipeline": {"type": "batch", "batch_size": BATCH},
        "data_serializer": {"type": "hdf5", "fields": {k: f"/{k}" for k in fields}},
        "data_handlers": [{"type": "null"}],
    }


def rate(cmd: list[str]) -> tuple[float, float, int]:
    """events per wall second and per CPU second (all ranks), and events, from the JSON
    summary line on stdout of `cmd`."""
    env = {**os.environ, "UCX_LOG_LEVEL": "error"}
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    line = [x for x in res.stdout.splitlines() if x.startswith('{"events"')][-1]
    doc = json.loads(line)
    return doc["events"] / doc["seconds"], doc["events"] / doc["cpu_seconds"], doc["events"]


def main() -> None:
    mpirun = str(BIN / "mpirun")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_run(root)
        cfg_serial = root / "serial.yaml"
        cfg_serial.write_text(yaml.safe_dump(config({"files": str(data)})))
        cfg_mpi = root / "mpi.yaml"
        mpi_source = {
            "experiment": "xpptut15",
            "run": 14,
            "directory": str(root),
            "batch_size": PSANA_BATCH,
        }
        cfg_mpi.write_text(yaml.safe_dump(config(mpi_source)))
        lcl = [str(BIN / "lclstreamer"), "--no-progress", "-c"]
        bare = [sys.executable, "-c", BARE]
        runs = {
            ("serial", "bare"): [mpirun, "-n", "1", *bare, "files", str(data)],
            ("serial", "lclstreamer"): [mpirun, "-n", "1", *lcl, str(cfg_serial)],
            ("mpi -n 4", "bare"): [mpirun, "-n", "4", *bare, "exp", str(root), str(PSANA_BATCH)],
            ("mpi -n 4", "lclstreamer"): [mpirun, "-n", "4", *lcl, str(cfg_mpi)],
            ("serial, source only", "lclstreamer"): [
                mpirun,
                "-n",
                "1",
                sys.executable,
                "-c",
                EXTRACT,
                str(cfg_serial),
            ],
        }
        best: dict[tuple[str, str], float] = {}
        best_cpu: dict[tuple[str, str], float] = {}
        for _ in range(REPEATS):
            for key, cmd in runs.items():
                r, c, n = rate(cmd)
                assert n == EVENTS, f"{key}: {n} events of {EVENTS}"
                best[key] = max(best.get(key, 0.0), r)
                best_cpu[key] = max(best_cpu.get(key, 0.0), c)
    print(
        f"psana2 bench: {EVENTS} events, lclstreamer batch {BATCH}, best of {REPEATS};"
        f" {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        "| mode | bare psana2 loop events/s | lclstreamer (null handler) events/s | ratio"
        " | bare events per CPU s | lclstreamer events per CPU s | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for mode in ("serial", "mpi -n 4", "serial, source only"):
        base = "serial" if mode.startswith("serial") else mode
        b, s = best[(base, "bare")], best[(mode, "lclstreamer")]
        bc, sc = best_cpu[(base, "bare")], best_cpu[(mode, "lclstreamer")]
        print(
            f"| {mode} | {b:,.0f} | {s:,.0f} | **{s / b:.2f}** | {bc:,.0f} | {sc:,.0f}"
            f" | **{sc / bc:.2f}** |"
        )


if __name__ == "__main__":
    main()
