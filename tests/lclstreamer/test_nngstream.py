"""Acceptance with the real buffer: `mpirun -n 2 lclstreamer` -> nngstream -> 2 consumers.

nngstream runs as its own process (its console script; lclstreamer never imports it).
Consumers are Pull0 sockets in this test that dial the buffer's OUT address and stop
at the buffer's end message (docs/nngstream.md: a message starting with the control
prefix, JSON after it)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pynng
import pytest
import yaml

from .helpers import EXAMPLES, read_message, run_cli, write_config

END_PREFIX = b"\x00NNGSTREAM\x00"

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]


class DialingConsumer(threading.Thread):
    """Receives until the buffer's end message (`end`), or until the connection is gone
    without one (`end` stays None)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.messages: list[dict] = []
        self.connected = threading.Event()
        self.end: dict | None = None
        self._live: set[int] = set()

    def _added(self, pipe: pynng.Pipe) -> None:
        self._live.add(pipe.id)
        self.connected.set()

    def run(self) -> None:
        with pynng.Pull0(recv_max_size=0, recv_timeout=200) as sock:
            sock.add_post_pipe_connect_cb(self._added)
            sock.add_post_pipe_remove_cb(lambda pipe: self._live.discard(pipe.id))
            sock.dial(self.url, block=False)
            while True:
                try:
                    data = sock.recv()
                    if data.startswith(END_PREFIX):
                        self.end = json.loads(data[len(END_PREFIX) :])
                        return
                    self.messages.append(read_message(data))
                except pynng.Timeout:
                    if self.connected.is_set() and not self._live:
                        return


def test_two_ranks_through_nngstream_to_two_consumers(tmp_path, spawn, free_port):
    in_url, out_url = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    buffer = spawn(["nngstream", in_url, out_url, "--metrics-interval", "1"], name="nngstream")
    for url in (in_url, out_url):
        buffer.wait_port(int(url.rsplit(":", 1)[1]))
    consumers = [DialingConsumer(out_url) for _ in range(2)]
    for c in consumers:
        c.start()
    for c in consumers:
        assert c.connected.wait(20), "consumer could not connect to the buffer"

    cfg = yaml.safe_load((EXAMPLES / "synthetic-to-nng.yaml").read_text())
    cfg["event_source"].update(number_of_events=200, rate_limit_hz=None)
    cfg["event_source"]["detectors"]["epix10k2M"].update(shape=[4, 32, 32], missing_every=50)
    cfg["data_handlers"][0]["urls"] = [in_url]
    res = run_cli(["-c", str(write_config(tmp_path / "c.yaml", cfg)), "--no-progress"], ranks=2)
    assert res.code == 0, res.stderr
    assert buffer.wait(60) == 0, buffer.stderr()
    for c in consumers:
        c.join(30)
        assert not c.is_alive(), "consumer did not see the end of the stream"
        assert c.end is not None and c.end["sent"] == sum(len(x.messages) for x in consumers)

    expected = [i for i in range(200) if i % 50 != 49]
    assert all(c.messages for c in consumers), "round-robin reached both consumers"
    seen = []
    per_rank_seq: dict[int, list[int]] = {0: [], 1: []}
    for m in (m for c in consumers for m in c.messages):
        idx = m["/entry_1/event_index"]
        assert m["attrs"]["n_events"] == len(idx) and m["attrs"]["first_event"] == idx[0]
        assert m["/entry_1/data_1/data"].shape == (len(idx), 4, 32, 32)
        per_rank_seq[int(m["attrs"]["rank"])].append(int(m["attrs"]["seq"]))
        seen.extend(int(i) for i in idx)
    assert sorted(seen) == expected, "every event exactly once"
    for seqs in per_rank_seq.values():
        assert sorted(seqs) == list(range(len(seqs)))
    assert res.summary()["skipped"] == 4 and res.summary()["events"] == len(expected)
    assert res.summary()["complete"] is True and "interrupted" not in res.summary()
    assert np.sum([len(c.messages) for c in consumers]) == res.summary()["batches"]
