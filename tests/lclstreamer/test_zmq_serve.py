"""zmq_rep: many REQ consumers served by 2 ranks through rank 0's broker, every frame
exactly once, unanswered requests logged at the end; zmq_pub with a topic; the msgpack
layout (decoded with the msgpack library; CrystFEL itself reads it in test_crystfel)."""

from __future__ import annotations

import re
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from lclstreamer.models import BatchPipeline as BatchConfig
from lclstreamer.models import MsgpackSerializer as MsgpackConfig
from lclstreamer.pipeline import BatchPipeline
from lclstreamer.protocols import Event, RunInfo, StreamContext
from lclstreamer.serializers.msgpack import MsgpackSerializer

from .helpers import LCLSTREAMER, run_cli, write_config

pytestmark = [pytest.mark.timeout(120)]


def _config(n: int, handler: dict) -> dict:
    return {
        "event_source": {
            "type": "synthetic",
            "number_of_events": n,
            "detectors": {"det": {"shape": [16, 24], "dtype": "uint16", "peaks": 2}},
        },
        "data_sources": {
            "frame": {"type": "detector", "source": "det"},
            "index": {"type": "event_index"},
        },
        "data_serializer": {"type": "msgpack", "fields": {"frame": "data", "index": "event"}},
        "data_handlers": [handler],
    }


class Requester(threading.Thread):
    """A REQ consumer asking `next` until told to stop; keeps the frames it got."""

    def __init__(self, url: str, done: threading.Event) -> None:
        super().__init__(daemon=True)
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.REQ)
        self.sock.connect(url)
        self.done = done
        self.got: list[dict] = []
        self.waiting = False

    def run(self) -> None:
        while not self.done.is_set():
            if not self.waiting:
                self.sock.send(b"next")
                self.waiting = True
            if self.sock.poll(100):
                self.got.append(msgpack.unpackb(self.sock.recv()))
                self.waiting = False
        self.sock.close(linger=0)
        self.context.term()


@pytest.mark.mpi
def test_zmq_rep_serves_every_frame_once_to_many_consumers(tmp_path, free_port):
    url = f"tcp://127.0.0.1:{free_port()}"
    backend = f"tcp://127.0.0.1:{free_port()}"
    n = 30
    handler = {"type": "zmq_rep", "url": url, "backend_url": backend}
    cfg = _config(n, handler)
    cfg["event_source"]["rate_limit_hz"] = 50  # consumers are all waiting: served in turn
    write_config(tmp_path / "cfg.yaml", cfg)
    done = threading.Event()
    consumers = [Requester(url, done) for _ in range(3)]
    for c in consumers:
        c.start()
    try:
        res = run_cli(["-c", "cfg.yaml", "--no-progress"], ranks=2, cwd=tmp_path)
    finally:
        done.set()
        for c in consumers:
            c.join(5)
    assert res.code == 0, res.stderr
    events = sorted(m["event"] for c in consumers for m in c.got)
    assert events == list(range(n))
    assert all(c.got for c in consumers), "every consumer was served"
    assert f"zmq_rep: end of run, {n} messages served at {url}" in res.stderr
    first = consumers[0].got[0]
    assert first["data"]["type"] == "<i4" and first["data"]["shape"] == [16, 24]
    assert len(first["data"]["data"]) == 16 * 24 * 4


def test_zmq_rep_logs_requests_left_unanswered(tmp_path, free_port):
    """Three consumers that always ask again, four frames 0.5 s apart: when the run ends,
    the consumers not served last have been waiting for a while, and the log says so."""
    url = f"tcp://127.0.0.1:{free_port()}"
    handler = {"type": "zmq_rep", "url": url, "backend_url": f"tcp://127.0.0.1:{free_port()}"}
    cfg = _config(4, handler)
    cfg["event_source"]["rate_limit_hz"] = 2
    write_config(tmp_path / "cfg.yaml", cfg)
    done = threading.Event()
    consumers = [Requester(url, done) for _ in range(3)]
    for c in consumers:
        c.start()
    try:
        res = run_cli(["-c", "cfg.yaml", "--no-progress"], cwd=tmp_path)
    finally:
        done.set()
        for c in consumers:
            c.join(5)
    assert res.code == 0, res.stderr
    assert sorted(m["event"] for c in consumers for m in c.got) == list(range(4))
    unanswered = re.search(
        r"; (\d) consumer request\(s\) unanswered: those consumers wait", res.stderr
    )
    assert unanswered and 1 <= int(unanswered[1]) <= 3, res.stderr
    assert "stop indexamajig with SIGUSR1" in res.stderr


def test_zmq_rep_without_consumers_times_out_with_a_clear_error(tmp_path, free_port):
    url = f"tcp://127.0.0.1:{free_port()}"
    handler = {
        "type": "zmq_rep",
        "url": url,
        "backend_url": f"tcp://127.0.0.1:{free_port()}",
        "request_timeout": 1.0,
    }
    write_config(tmp_path / "cfg.yaml", _config(2, handler))
    res = run_cli(["-c", "cfg.yaml", "--no-progress"], cwd=tmp_path)
    assert res.code == 1
    assert f"zmq_rep: no consumer asked for a message within 1.0 s ({url})" in res.stderr
    assert "Traceback" not in res.stderr


def test_zmq_rep_port_in_use_is_a_setup_error(tmp_path, free_port):
    port = free_port()
    ctx = zmq.Context()
    blocker = ctx.socket(zmq.ROUTER)
    blocker.bind(f"tcp://127.0.0.1:{port}")
    try:
        handler = {"type": "zmq_rep", "url": f"tcp://127.0.0.1:{port}"}
        write_config(tmp_path / "cfg.yaml", _config(2, handler))
        res = run_cli(["-c", "cfg.yaml", "--no-progress"], cwd=tmp_path)
    finally:
        blocker.close(linger=0)
        ctx.term()
    assert res.code == 1
    assert f"zmq_rep: cannot bind tcp://127.0.0.1:{port}" in res.stderr


def test_zmq_pub_sends_topic_then_message(tmp_path, free_port, spawn):
    """PUB binds (the default); a SUB joining late misses the first messages (ZeroMQ's
    PUB semantics), then gets [topic, message] pairs in order."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    cfg = _config(20, {"type": "zmq_pub", "urls": [url], "topic": "frames"})
    cfg["event_source"]["rate_limit_hz"] = 10  # a live source, so a subscriber can join
    write_config(tmp_path / "cfg.yaml", cfg)
    proc = spawn([LCLSTREAMER, "-c", "cfg.yaml", "--no-progress"], cwd=tmp_path)
    proc.wait_port(port)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"frames")
    sub.connect(url)
    got = []
    try:
        while sub.poll(3000):
            got.append(sub.recv_multipart())
    finally:
        sub.close(linger=0)
        ctx.term()
    assert proc.wait(30) == 0, proc.stderr()
    assert got and all(parts[0] == b"frames" and len(parts) == 2 for parts in got)
    events = [msgpack.unpackb(parts[1])["event"] for parts in got]
    assert events == list(range(events[0], 20))


def _serialize(cfg: MsgpackConfig, values: list[dict]) -> list[dict]:
    events = iter(Event(i, v) for i, v in enumerate(values))
    batches = BatchPipeline(BatchConfig(type="batch", batch_size=2), None)(events)
    ser = MsgpackSerializer(cfg, StreamContext(0, 1, ""), RunInfo("x", 1))
    return [msgpack.unpackb(bytes(m)) for m in ser(batches)]


def test_msgpack_layout_dtypes_and_stacked_panels():
    rng = np.random.default_rng(0)
    panels = rng.integers(0, 60000, (2, 3, 4), dtype=np.uint16)
    floats = rng.standard_normal((3, 4))
    big = np.array([1, 2**40], dtype=np.uint64)
    values = [
        {"p": panels, "f": floats, "b": big, "e": np.float64(9500.5), "s": "run", "i": np.int64(k)}
        for k in range(3)
    ]
    cfg = MsgpackConfig(
        type="msgpack",
        fields={"p": "data", "f": "calib", "b": "big", "e": "energy", "s": "tag", "i": "index"},
    )
    msgs = _serialize(cfg, values)
    assert len(msgs) == 3 and [m["index"] for m in msgs] == [0, 1, 2]
    m = msgs[0]
    assert list(m) == ["data", "calib", "big", "energy", "tag", "index"]
    assert m["data"]["type"] == "<i4" and m["data"]["shape"] == [6, 4]
    np.testing.assert_array_equal(
        np.frombuffer(m["data"]["data"], "<i4").reshape(6, 4), panels.reshape(6, 4)
    )
    assert m["calib"]["type"] == "<f4"
    np.testing.assert_array_equal(
        np.frombuffer(m["calib"]["data"], "<f4").reshape(3, 4), floats.astype(np.float32)
    )
    assert m["big"]["type"] == "<f4"  # uint64 does not fit int32
    assert m["energy"] == 9500.5 and m["tag"] == "run"


def test_msgpack_keys_must_not_be_prefixes(tmp_path):
    cfg = _config(1, {"type": "null"})
    cfg["data_serializer"]["fields"] = {"frame": "data", "index": "data_index"}
    write_config(tmp_path / "cfg.yaml", cfg)
    res = run_cli(["-c", "cfg.yaml", "--validate"], cwd=tmp_path)
    assert res.code == 2
    assert "key 'data' is a prefix of 'data_index'; rename one" in res.stderr


def test_zmq_rep_gives_the_answer_of_a_consumer_that_left_to_the_next(tmp_path, free_port):
    """A watched directory paces the frames: consumer A takes frame 0 and asks again,
    B asks, A leaves; only then does frame 1 exist. The answer meant for A (first in
    line) goes to B, and the log says so."""
    import h5py

    url = f"tcp://127.0.0.1:{free_port()}"
    data = tmp_path / "data"
    data.mkdir()
    cfg = {
        "event_source": {
            "type": "hdf5",
            "files": str(data / "f-*.h5"),
            "datasets": {"det": "/data"},
            "watch": {"poll_interval": 0.1, "settle": 0.2, "end_marker": "END"},
        },
        "data_sources": {"index": {"type": "event_index"}},
        "processing_pipeline": {"type": "batch", "batch_size": 1},
        "data_serializer": {"type": "msgpack", "fields": {"index": "event"}},
        "data_handlers": [
            {"type": "zmq_rep", "url": url, "backend_url": f"tcp://127.0.0.1:{free_port()}"}
        ],
    }
    write_config(tmp_path / "cfg.yaml", cfg)

    def frame_file(k: int) -> None:
        with h5py.File(data / f"f-{k}.h5", "w") as f:
            f["/data"] = np.zeros((1, 2), np.uint8)

    frame_file(0)
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.REQ), ctx.socket(zmq.REQ)
    result: dict = {}

    def consumers() -> None:
        a.connect(url)
        a.send(b"next")
        result["a"] = msgpack.unpackb(a.recv())["event"]
        a.send(b"next")  # frame 1 does not exist yet: this request waits
        b.connect(url)
        b.send(b"next")
        time.sleep(0.5)  # both requests reach the broker
        a.close(linger=0)
        time.sleep(0.5)  # the broker sees A leave
        frame_file(1)
        if b.poll(60_000):
            result["b"] = msgpack.unpackb(b.recv())["event"]
        (data / "END").touch()

    thread = threading.Thread(target=consumers, daemon=True)
    thread.start()
    try:
        res = run_cli(["-c", "cfg.yaml", "--no-progress"], cwd=tmp_path, timeout=90)
        thread.join(30)
    finally:
        b.close(linger=0)
        ctx.term()
    assert res.code == 0, res.stderr
    assert result == {"a": 0, "b": 1}, res.stderr
    assert "2 messages served" in res.stderr
    assert "(1 re-served after their consumer left)" in res.stderr
