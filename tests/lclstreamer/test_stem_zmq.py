"""4D-STEM over ZMQ (docs/stem.md, "Over ZMQ"): 4 sector producers (`mpirun -n 4
lclstreamer`, zmq_push sending the two-part NERSC message), one aggregator (`nngstream
--route-by frame_number` with ZMQ on both sides), 2 consumer ranks (`mpirun -n 2
stem-count count --proto zmq`), and the output read by real stempy."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess

import h5py
import msgpack
import numpy as np
import psutil
import pytest
import zmq

from lclstreamer.config import load_config
from lclstreamer.errors import ConfigError, DataError, HandlerError
from lclstreamer.handlers.sockets import ZMQPushHandler
from lclstreamer.models import StemSectorEventSource
from lclstreamer.protocols import StreamContext
from lclstreamer.sources.stem import is_lost
from lclstreamer.stem.wire import decode
from tests.support.ci import require_module
from tests.support.waiting import wait_until

from ..nngstream.helpers import final_metrics, metrics_lines
from .helpers import BIN, MPIRUN, run_cli, write_config

pytestmark = pytest.mark.timeout(240)

SCAN, SHAPE, SECTORS = (32, 32), (128, 128), 4


def _source(**kw) -> dict:
    cfg = {"type": "stem_sectors", "scan_shape": SCAN, "frame_shape": SHAPE, "seed": 3}
    return StemSectorEventSource.model_validate({**cfg, **kw}).model_dump(mode="json")


def _config(tmp_path, in_url: str, serializer: str = "stem_sector", **handler) -> dict:
    return {
        "source_identifier": "4dcamera:test",
        "event_source": _source(sector_loss=0.001),
        "data_sources": {
            "sector": {"type": "detector", "source": "4dcamera"},
            "frame_number": {"type": "scalar", "source": "frame_number", "dtype": "int64"},
            "sector_index": {"type": "scalar", "source": "sector_index", "dtype": "int64"},
            "scan_number": {"type": "scalar", "source": "scan_number", "dtype": "int64"},
        },
        "processing_pipeline": {"type": "batch", "batch_size": 8},
        "data_serializer": {"type": serializer},
        "data_handlers": [{"type": "zmq_push", "urls": [in_url], "mode": "dial", **handler}],
    }


# -- the handler and the wire format ----------------------------------------------------
def test_zmq_push_sends_stem_sectors_as_two_parts(tmp_path, free_port):
    """zmq_push splits a stem_sector message after its msgpack header (by default with
    that serializer): a real PULL socket receives two parts that decode to the sector."""
    port = free_port()
    path = write_config(tmp_path / "p.yaml", _config(tmp_path, f"tcp://127.0.0.1:{port}"))
    cfg = load_config(path)
    assert cfg.data_handlers[0].multipart is True
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(f"tcp://127.0.0.1:{port}")
    header = msgpack.packb(
        {"scan_number": 1, "frame_number": 7, "sector": 2, "shape": [4, 3], "dtype": "<u2"}
    )
    array = np.arange(12, dtype="<u2").reshape(4, 3)
    stream = StreamContext(rank=0, size=1, source_identifier="test")
    try:
        with ZMQPushHandler(cfg.data_handlers[0], stream, ".stem") as handler:
            handler.handle(memoryview(header + array.tobytes()))
            assert pull.poll(10_000)
            parts = pull.recv_multipart(copy=False)
            with pytest.raises(HandlerError, match="does not start with a msgpack header"):
                handler.handle(b"\xc1 not msgpack")
    finally:
        pull.close(linger=0)
        ctx.term()
    assert [len(p) for p in parts] == [len(header), array.nbytes]
    sec = decode(tuple(p.buffer for p in parts))
    assert (sec.frame_number, sec.sector) == (7, 2)
    np.testing.assert_array_equal(sec.data, array)


def test_multipart_is_refused_for_other_serializers(tmp_path):
    data = _config(tmp_path, "tcp://127.0.0.1:9", serializer="numpy", multipart=True)
    data["data_serializer"] = {"type": "numpy", "fields": {"sector": "sector"}}
    with pytest.raises(ConfigError, match="data_handlers.0.multipart: only stem_sector"):
        load_config(write_config(tmp_path / "p.yaml", data))
    data["data_handlers"][0]["multipart"] = None
    assert load_config(write_config(tmp_path / "q.yaml", data)).data_handlers[0].multipart is False


@pytest.mark.parametrize(
    "parts, why",
    [
        ((b"\x01", b"\x02", b"\x03"), "3 parts, expected 1 or 2"),
        ((msgpack.packb({"frame_number": 1}), b"\x00\x00"), "bad header"),
        ((msgpack.packb({"scan_number": 1, "frame_number": 1, "sector": 0, "shape": [2],
                         "dtype": "<u2"}) + b"x", b"\x00" * 4), "1 bytes after the header"),
        ((msgpack.packb({"scan_number": 1, "frame_number": 1, "sector": 0, "shape": [2],
                         "dtype": "<u2"}), b"\x00" * 3), "3 bytes of data, expected 4"),
    ],
)  # fmt: skip
def test_two_part_messages_with_faults_are_refused(parts, why):
    with pytest.raises(DataError, match=why):
        decode(parts)


# -- the whole pipeline -----------------------------------------------------------------
def _pipeline(tmp_path, spawn, free_port, **source) -> tuple:
    """The ZMQ aggregator and the 2-rank `stem-count --proto zmq` job, both ranks
    connected; returns (config data, its path, aggregator, consumers, output file)."""
    in_port, out_port = free_port(), free_port()
    data = _config(tmp_path, f"tcp://127.0.0.1:{in_port}")
    data["event_source"].update(source)
    cfg_path = write_config(tmp_path / "producers.yaml", data)
    buf = spawn(
        [str(BIN / "nngstream"), f"tcp://127.0.0.1:{in_port}", f"tcp://127.0.0.1:{out_port}",
         "--in-proto", "zmq", "--out-proto", "zmq", "--route-by", "frame_number",
         "--producers", "4", "--metrics-interval", "0.2"],
        name="aggregator",
    )  # fmt: skip
    buf.wait_port(in_port)
    buf.wait_port(out_port)
    dark = tmp_path / "dark.npy"
    got = subprocess.run(
        [str(BIN / "stem-count"), "dark", str(cfg_path), "-o", str(dark)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    out = tmp_path / "counts.h5"
    scan = data["event_source"]["scan_shape"]
    cons = spawn(
        [MPIRUN, "-n", "2", str(BIN / "stem-count"), "count", f"tcp://127.0.0.1:{out_port}",
         "--proto", "zmq", "--scan-shape", str(scan[0]), str(scan[1]), "--frame-shape",
         str(SHAPE[0]), str(SHAPE[1]), "--dark", str(dark), "-o", str(out)],
        name="consumers",
    )  # fmt: skip
    wait_until(lambda: any(m.get("consumers") == 2 for m in metrics_lines(buf)), 60, "2 ranks")
    return data, cfg_path, buf, cons, out


@pytest.mark.mpi
def test_kill_9_of_the_zmq_aggregator_fails_the_consumer_job(tmp_path, spawn, free_port):
    """The aggregator killed mid-scan: the consumer job exits non-zero, saying the
    stream broke (one line, no traceback), and writes no file."""
    _, cfg_path, buf, cons, out = _pipeline(tmp_path, spawn, free_port, scan_shape=[64, 64])
    prod = spawn([MPIRUN, "-n", "4", str(BIN / "lclstreamer"), "-c", str(cfg_path)], name="prod")
    wait_until(lambda: metrics_lines(buf)[-1]["sent"] > 200, 60, "mid-scan")
    buf.signal(signal.SIGKILL)
    assert cons.wait(60) != 0
    assert "stem-count: error: rank" in cons.stderr() and "stream broken after" in cons.stderr()
    assert "Traceback" not in cons.stderr()
    assert not out.exists()
    assert prod.wait(60) != 0  # the producers' liveness bound: the buffer is gone


def _rank_process(job, rank: int) -> psutil.Process:
    """The `stem-count` process of MPI rank `rank` under the mpirun `job`."""
    for p in psutil.Process(job.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "count" in p.cmdline() and p.environ().get("PMI_RANK") == str(rank):
                return p
    raise AssertionError(f"no stem-count rank {rank} under mpirun {job.pid}")


@pytest.mark.mpi
def test_a_killed_consumer_rank_is_counted_as_loss_over_zmq(tmp_path, spawn, free_port):
    """At-most-once over ZMQ: one consumer rank stopped, then killed mid-scan (mpirun then
    ends the job). What the job had been sent and not acknowledged is the aggregator's
    lost_max; the next job gets the rest of the stream, accounts for every frame and
    reports the loss (lost_max, and the messages it did not receive)."""
    data, cfg_path, buf, first, _ = _pipeline(tmp_path, spawn, free_port)
    victim = _rank_process(first, 1)
    prod = spawn([MPIRUN, "-n", "4", str(BIN / "lclstreamer"), "-c", str(cfg_path)], name="prod")
    wait_until(lambda: metrics_lines(buf)[-1]["sent"] > 200, 60, "mid-scan")
    victim.send_signal(signal.SIGSTOP)  # its frames' keys hold the stream back

    def stalled() -> bool:  # nothing more handed to the job for 3 metrics lines
        lines = metrics_lines(buf)
        return len(lines) > 3 and len({m["sent"] for m in lines[-3:]}) == 1

    wait_until(stalled, 60, "the stream held by the stopped rank")
    victim.send_signal(signal.SIGKILL)
    assert first.wait(60) != 0  # mpirun ends the job when a rank dies
    wait_until(lambda: metrics_lines(buf)[-1]["consumers"] == 0, 30, "the job gone")
    assert prod.wait(120) == 0, prod.stderr()
    out = tmp_path / "second.h5"
    cmd = [*first.args]
    cmd[cmd.index("-o") + 1] = str(out)
    second = spawn(cmd, name="second")
    assert second.wait(120) == 0, second.stderr()
    assert buf.wait(60) == 0, buf.stderr()
    acc = json.loads(second.stdout().strip().splitlines()[-1])
    m = final_metrics(buf)
    n = SCAN[0] * SCAN[1]
    assert m["recvd"] == acc["stream_messages"] and m["redelivered"] == 0
    not_here = acc["stream_messages"] - acc["messages"]
    assert 0 < m["lost_max"] == acc["lost_max"] <= not_here
    assert acc["frames_complete"] + acc["frames_incomplete"] + acc["frames_missing"] == n
    assert acc["frames_missing"] + acc["frames_incomplete"] > 0
    assert f"lost_max {m['lost_max']}, {not_here} of the stream's" in second.stderr()
    assert out.is_file()


@pytest.mark.mpi
def test_four_producers_one_zmq_aggregator_two_consumer_ranks(tmp_path, spawn, free_port):
    data, cfg_path, buf, cons, out = _pipeline(tmp_path, spawn, free_port)
    prod = run_cli(["-c", str(cfg_path)], ranks=4, timeout=180)
    assert prod.code == 0, prod.stderr
    assert cons.wait(120) == 0, cons.stderr()
    assert buf.wait(60) == 0, buf.stderr()
    acc = json.loads(cons.stdout().strip().splitlines()[-1])

    src = StemSectorEventSource.model_validate(data["event_source"])
    n = SCAN[0] * SCAN[1]
    lost = {(f, s) for f in range(n) for s in range(SECTORS) if is_lost(src, f, s)}
    assert lost, "the seed must lose some sectors for this test to mean anything"
    per_frame = {f: sum((f, s) in lost for s in range(SECTORS)) for f in range(n)}
    m = final_metrics(buf)
    assert m["recvd"] == m["sent"] == SECTORS * n - len(lost) and m["lost_max"] == 0
    # every frame accounted for, none twice; the info counts equal what the ranks got
    assert acc["frames_double"] == 0 and acc["duplicates"] == 0 and acc["bad_messages"] == 0
    assert acc["frames_missing"] == sum(v == SECTORS for v in per_frame.values())
    assert acc["frames_incomplete"] == sum(0 < v < SECTORS for v in per_frame.values())
    assert acc["frames_complete"] + acc["frames_incomplete"] + acc["frames_missing"] == n
    assert acc["messages"] == acc["messages_expected"] == SECTORS * n - len(lost)
    assert acc["ranks_without_end"] == 0 and acc["lost_max"] == 0

    with h5py.File(out) as f:
        status = f["stream_accounting/frame_status"][()]
        counted_by = f["stream_accounting/counted_by"][()]
    for fr, v in per_frame.items():
        assert status[fr] == (1 if v == 0 else 2 if v < SECTORS else 0), f"frame {fr}"
    # keys spread over both groups: frame mod 2 picks the group (the ranks in hello order)
    assert set(counted_by[status > 0].tolist()) == {0, 1}
    seen = np.flatnonzero(status > 0)
    for parity in (0, 1):
        assert len(set(counted_by[seen[seen % 2 == parity]].tolist())) == 1

    require_module("stempy.io", "stempy")
    import stempy.io

    arr = stempy.io.load_electron_counts(str(out))
    assert tuple(int(x) for x in arr.scan_shape) == (SCAN[1], SCAN[0])
    assert tuple(int(x) for x in arr.frame_shape) == SHAPE
    assert int(arr.data.shape[0]) == n
