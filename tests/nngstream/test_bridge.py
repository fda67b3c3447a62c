"""IN and OUT on different protocols (lclstream-api runs NNG producers with ZMQ
consumers for `protocol: zmq`): every message arrives once and intact, with the end
message, through a real buffer process."""

from __future__ import annotations

import pytest

from .helpers import (
    check_delivery,
    consumer,
    final_metrics,
    load_received,
    producer,
    start_buffer,
    wait_exit,
)

PRODUCERS, CONSUMERS, PER_PRODUCER = 2, 2, 400


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("in_proto", "out_proto"), [("nng", "zmq"), ("zmq", "nng")])
def test_in_and_out_on_different_protocols(spawn, free_port, tmp_path, in_proto, out_proto):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, "--in-proto", in_proto, "--out-proto", out_proto,
        "--max-bytes", "32MiB", "--metrics-interval", "1",
    )  # fmt: skip
    outs = [tmp_path / f"consumer{i}.json" for i in range(CONSUMERS)]
    cons = [
        consumer(spawn, f"tcp://127.0.0.1:{out_port}", out, proto=out_proto, name=f"c{i}")
        for i, out in enumerate(outs)
    ]
    prods = [
        producer(spawn, f"tcp://127.0.0.1:{in_port}", p, PER_PRODUCER, proto=in_proto)
        for p in range(PRODUCERS)
    ]
    for p in prods:
        assert wait_exit(p, 90) == 0, p.stderr()
    assert wait_exit(buf, 60) == 0, buf.stderr()
    for c in cons:
        assert wait_exit(c, 30) == 0, c.stderr()
    results = [load_received(o) for o in outs]
    check_delivery(results, {p: PER_PRODUCER for p in range(PRODUCERS)})
    assert [r["eos"] for r in results] == ["end"] * CONSUMERS
    m = final_metrics(buf)
    total = PRODUCERS * PER_PRODUCER
    assert (m["state"], m["recvd"], m["sent"], m["dropped"]) == ("done", total, total, 0)
    assert m["bytes_in"] == m["bytes_out"] == sum(r["bytes"] for r in results)
