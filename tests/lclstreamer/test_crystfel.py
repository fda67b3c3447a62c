"""Acceptance: `mpirun -n 2 lclstreamer` with the sfx-crystfel example (synthetic frames
with injected peaks, our peak finder, msgpack + zmq_rep) feeds the real CrystFEL
`indexamajig --zmq-request=next --data-format=msgpack`; every frame appears exactly once
in CrystFEL's stream, with CrystFEL's own peakfinder8 peaks at the injected positions."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from tests.support.ci import require_executable

from .helpers import EXAMPLES, LCLSTREAMER, MPIRUN, write_config
from .science import example, injected, match, parse_stream

pytestmark = [pytest.mark.timeout(300), pytest.mark.mpi]

HOW = (
    "build CrystFEL with `bash ../shared/tools/crystfel/build.sh` (installs /opt/crystfel;"
    " .ci/run does it in CI)"
)


def _chunks(path) -> int:
    return path.read_text().count("----- End chunk") if path.exists() else 0


def test_crystfel_indexamajig_receives_every_frame_once(tmp_path, free_port, spawn):
    indexamajig = require_executable("indexamajig", HOW, dirs=("/opt/crystfel/bin",))
    n = 24
    port = free_port()
    cfg = example("sfx-crystfel.yaml")
    cfg["event_source"]["number_of_events"] = n
    backend = f"tcp://127.0.0.1:{free_port()}"
    cfg["data_handlers"] = [
        {"type": "zmq_rep", "url": f"tcp://127.0.0.1:{port}", "backend_url": backend}
    ]
    write_config(tmp_path / "cfg.yaml", cfg)
    streamer = spawn(
        [MPIRUN, "-n", "2", LCLSTREAMER, "-c", "cfg.yaml", "--no-progress"],
        cwd=tmp_path,
        name="lclstreamer",
    )
    stream = tmp_path / "run.stream"
    crystfel = spawn(
        [
            indexamajig,
            f"--zmq-input=tcp://127.0.0.1:{port}",
            "--zmq-request=next",
            "--data-format=msgpack",
            "-g",
            str(EXAMPLES / "sfx-crystfel.geom"),
            "-o",
            str(stream),
            "--peaks=peakfinder8",
            "--min-snr=5",
            "--threshold=20",
            "--indexing=none",
            "--copy-header=event_index",
            "-j",
            "2",  # two worker processes: two REQ consumers
        ],
        cwd=tmp_path,
        name="indexamajig",
    )
    assert streamer.wait(timeout=180) == 0, streamer.stderr()
    deadline = time.monotonic() + 120  # CrystFEL finishes the frames it received
    while _chunks(stream) < n and time.monotonic() < deadline and crystfel.popen.poll() is None:
        time.sleep(0.2)
    crystfel.signal(signal.SIGUSR1)  # CrystFEL's clean stop: ZMQ input has no end of stream
    crystfel.wait(timeout=60)

    assert "zmq_rep: end of run, 24 messages served" in streamer.stderr()
    chunks = parse_stream(stream)
    indices = sorted(int(c["header/int/event_index"]) for c in chunks)
    assert indices == list(range(n)), crystfel.stderr()[-2000:]
    truth = injected(cfg, "jungfrau4M", range(n))
    hit = total = 0
    for c in chunks:
        i = int(c["header/int/event_index"])
        assert float(c["header/float/detector_distance_mm"]) == 120.0
        assert abs(float(c["photon_energy_eV"]) - 9500.0) < 50
        peaks = np.array([(ss - 0.5, fs - 0.5) for fs, ss, _, _ in c["peaks"]]).reshape(-1, 2)
        found, _ = match(peaks, truth[i].astype(float))
        hit += found
        total += len(truth[i])
    print(f"CrystFEL peakfinder8 found {hit} of {total} injected peaks within 2 px")
    assert hit >= 0.9 * total
