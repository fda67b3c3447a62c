"""Acceptance: 4 producers x 2 consumers, 10 000 mixed-size messages, real processes."""

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

PRODUCERS, CONSUMERS, PER_PRODUCER = 4, 2, 2500


@pytest.mark.timeout(150)
@pytest.mark.parametrize("proto", ["nng", "zmq"])
def test_many_producers_many_consumers(spawn, free_port, tmp_path, proto):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, "--in-proto", proto, "--out-proto", proto,
        "--max-bytes", "64MiB", "--metrics-interval", "1",
    )  # fmt: skip
    outs = [tmp_path / f"consumer{i}.json" for i in range(CONSUMERS)]
    cons = [
        consumer(spawn, f"tcp://127.0.0.1:{out_port}", out, proto=proto, name=f"consumer{i}")
        for i, out in enumerate(outs)
    ]
    prods = [
        producer(spawn, f"tcp://127.0.0.1:{in_port}", p, PER_PRODUCER, proto=proto)
        for p in range(PRODUCERS)
    ]
    for p in prods:
        assert wait_exit(p, 120) == 0, p.stderr()
    assert wait_exit(buf, 60) == 0, buf.stderr()
    for c in cons:
        assert wait_exit(c, 30) == 0, c.stderr()
    results = [load_received(o) for o in outs]
    check_delivery(results, {p: PER_PRODUCER for p in range(PRODUCERS)})
    assert [r["eos"] for r in results] == ["end"] * CONSUMERS
    for r in results:  # every consumer gets the whole stream's totals
        assert r["end"]["sent"] == r["end"]["recvd"] == sum(len(x["received"]) for x in results)
        assert r["end"]["lost_max"] == 0
    assert all(r["received"] for r in results), "round-robin left a consumer empty"
    m = final_metrics(buf)
    total = PRODUCERS * PER_PRODUCER
    assert (m["state"], m["recvd"], m["sent"], m["dropped"], m["buffered"]) == (
        "done",
        total,
        total,
        0,
        0,
    )
    assert m["bytes_in"] == m["bytes_out"] == sum(r["bytes"] for r in results)
