"""Acceptance: a 2-rank Simplon (DECTRIS Stream V2) run decoded the way DECTRIS' own
client does it, with cbor2 and DECTRIS' decompression library (`dectris-compression`):
every image bit-exact, exactly one `start` (first) and one `end` (last)."""

from __future__ import annotations

import threading

import cbor2
import numpy as np
import pytest
import zmq

from tests.support.ci import require_module

from .helpers import run_cli, write_config
from .science import example, source_of

pytestmark = [pytest.mark.timeout(180), pytest.mark.mpi]

DTYPES = {68: "u1", 69: "<u2", 70: "<u4", 78: "<i4", 85: "<f4"}


def decode(message: bytes) -> dict:
    """Stream V2 decoding per DECTRIS' documentation: typed arrays, row-major
    multi-dimensional arrays, tag 56500 decompressed by dectris.compression."""
    from dectris.compression import decompress

    def hook(*args):  # cbor2 5 passes (decoder, tag), cbor2 6 (tag, immutable)
        tag = next(a for a in args if isinstance(a, cbor2.CBORTag))
        if tag.tag == 56500:
            algorithm, elem_size, data = tag.value
            return decompress(data, algorithm, elem_size=elem_size)
        if tag.tag in DTYPES:
            return np.frombuffer(tag.value, dtype=DTYPES[tag.tag])
        if tag.tag == 40:
            dims, array = tag.value
            return array.reshape(dims)
        return tag

    return cbor2.loads(message, tag_hook=hook)


class Puller(threading.Thread):
    """A PULL socket bound where the ranks' PUSH sockets dial; keeps raw messages."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.PULL)
        self.sock.bind(url)
        self.messages: list[bytes] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            if self.sock.poll(100):
                self.messages.append(self.sock.recv())
        self.sock.close(linger=0)
        self.context.term()

    def drain_and_stop(self) -> None:
        self.done.set()
        self.join(10)


@pytest.mark.parametrize("compression", ["bslz4", "lz4", "none"])
def test_two_rank_simplon_series_decodes_bit_exact(tmp_path, free_port, compression):
    require_module("dectris.compression", "dectris-compression")
    n = 14
    url = f"tcp://127.0.0.1:{free_port()}"
    cfg = example("sfx-simplon.yaml")
    cfg["event_source"]["number_of_events"] = n
    cfg["event_source"]["pool_size"] = 0  # every frame distinct
    cfg["event_source"]["detectors"]["eiger4M"]["shape"] = [96, 128]
    cfg["processing_pipeline"]["batch_size"] = 3
    cfg["data_serializer"]["compression"] = compression
    cfg["data_serializer"]["start_user_data"] = {"polarization_axis": [1.0, 0.0, 0.0]}
    cfg["data_handlers"] = [{"type": "zmq_push", "urls": [url]}]
    write_config(tmp_path / "cfg.yaml", cfg)
    puller = Puller(url)
    puller.start()
    try:
        res = run_cli(["-c", "cfg.yaml", "--no-progress"], ranks=2, cwd=tmp_path, timeout=120)
        assert res.code == 0, res.stderr
    finally:
        # the run is over: every rank closed its PUSH socket (linger delivers everything)
        while True:
            before = len(puller.messages)
            puller.join(0.5)
            if len(puller.messages) == before:
                break
        puller.drain_and_stop()
    messages = [decode(m) for m in puller.messages]
    kinds = [m["type"] for m in messages]
    assert kinds.count("start") == 1 and kinds.count("end") == 1
    assert kinds[0] == "start"  # sent before any rank handed over an image
    start = messages[0]
    at_end = kinds.index("end")
    end = messages[at_end]
    # rank 0's messages share one connection (FIFO): its images all precede the end;
    # other ranks' connections are fair-queued by the client, so their last images may
    # arrive after it (the end says how many images to expect)
    for k, m in enumerate(messages):
        if m["type"] == "image" and m["image_id"] % 2 == 0:  # rank 0's events
            assert k < at_end
    assert (start["image_size_y"], start["image_size_x"]) == (96, 128)
    assert start["channels"] == ["threshold_1"]
    assert start["user_data"] == {
        "compression": compression,
        "dtype": "uint16",
        "polarization_axis": [1.0, 0.0, 0.0],
    }
    assert end["series_unique_id"] == start["series_unique_id"]
    assert end["user_data"]["number_of_images"] == n
    images = [m for m in messages if m["type"] == "image"]
    assert sorted(m["image_id"] for m in images) == list(range(n))
    src = source_of(cfg)
    for m in images:
        i = m["image_id"]
        assert m["series_unique_id"] == start["series_unique_id"]
        assert m["series_date"] == start["arm_date"]  # a datetime (tag 0)
        assert m["user_data"]["event_index"] == i
        frame = m["data"]["threshold_1"]
        if compression == "none":  # plain typed array of the raw bytes
            frame = np.asarray(frame)
        truth = src.frame("eiger4M", i)
        assert frame.dtype == np.dtype("<u2") and frame.shape == truth.shape
        np.testing.assert_array_equal(frame, truth)
    assert res.summary()["events"] == n


def test_simplon_refuses_frames_it_cannot_describe(tmp_path):
    cfg = example("sfx-simplon.yaml")
    cfg["event_source"]["number_of_events"] = 2
    cfg["event_source"]["detectors"]["eiger4M"]["shape"] = [2, 8, 8]
    cfg["data_handlers"] = [{"type": "null"}]
    write_config(tmp_path / "cfg.yaml", cfg)
    res = run_cli(["-c", "cfg.yaml", "--no-progress"], cwd=tmp_path)
    assert res.code == 1
    assert "simplon serializer: 'image' must be one 2-D frame per event" in res.stderr
    cfg["event_source"]["detectors"]["eiger4M"].update(shape=[8, 8], dtype="int16")
    write_config(tmp_path / "cfg.yaml", cfg)
    res = run_cli(["-c", "cfg.yaml", "--no-progress"], cwd=tmp_path)
    assert res.code == 1
    assert "frames of dtype int16 have no DECTRIS typed array" in res.stderr
