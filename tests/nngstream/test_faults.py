"""A consumer or a producer killed mid-stream: the stream goes on and still ends."""

from __future__ import annotations

import signal

import pytest

from .helpers import (
    check_delivery,
    consumer,
    final_metrics,
    last_count,
    load_received,
    producer,
    start_buffer,
    wait_exit,
    wait_until,
)

SIZE = 64 * 1024
# What can sit between the buffer and a consumer besides what the consumer counted:
# its NNG/ZMQ receive queue, the message being read, and both kernel socket buffers
# (a few MiB each on loopback). Expressed in 64 KiB messages, generously.
IN_TRANSIT = 400


@pytest.mark.timeout(90)
@pytest.mark.parametrize("proto", ["nng", "zmq"])
def test_consumer_killed_mid_stream(spawn, free_port, tmp_path, proto):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, "--in-proto", proto, "--out-proto", proto,
        "--max-bytes", "8MiB", "--linger", "1",
    )  # fmt: skip
    out_url = f"tcp://127.0.0.1:{out_port}"
    outs = [tmp_path / f"c{i}.json" for i in range(3)]
    cons = [
        consumer(spawn, out_url, outs[i], "--delay", "0.002", proto=proto, name=f"consumer{i}")
        for i in range(3)
    ]
    per_producer = 1500
    prods = [
        producer(spawn, f"tcp://127.0.0.1:{in_port}", p, per_producer, "--sizes", str(SIZE),
                 proto=proto)
        for p in range(2)
    ]  # fmt: skip
    victim, survivors = cons[0], cons[1:]
    wait_until(lambda: last_count(victim, "got") >= 200, 60, "the victim to receive 200")
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    held = last_count(victim, "got")
    at_kill = [last_count(c, "got") for c in survivors]
    for p in prods:
        assert wait_exit(p, 60) == 0, p.stderr()
    assert wait_exit(buf, 60) == 0, buf.stderr()
    for c in survivors:
        assert wait_exit(c, 30) == 0, c.stderr()
    results = [load_received(o) for i, o in enumerate(outs) if i > 0]
    got = [len(r["received"]) for r in results]
    assert all(after > before for after, before in zip(got, at_kill, strict=True)), (
        "survivors stopped receiving after the kill"
    )
    m = final_metrics(buf)
    total = 2 * per_producer
    assert (m["state"], m["recvd"], m["dropped"], m["buffered"]) == ("done", total, 0, 0)
    # every message handed out went to a survivor or to the victim
    to_victim = m["sent"] - sum(got)
    assert held <= to_victim <= held + IN_TRANSIT, (m["sent"], got, held)
    assert m["sent"] == total  # nothing was left in the buffer
    # the loss is counted where users look: an upper bound, at least what went missing
    missing = to_victim - held
    assert m["lost_max"] >= max(missing, 1)
    assert all(r["end"]["lost_max"] == m["lost_max"] for r in results)
    # survivors: exactly once and in order, and nothing the producers did not send
    seen = {tuple(x) for r in results for x in r["received"]}
    assert len(seen) == sum(got)
    for r in results:
        for p in (0, 1):
            seqs = [s for q, s in r["received"] if q == p]
            assert seqs == sorted(seqs) and all(0 <= s < per_producer for s in seqs)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("proto", ["nng", "zmq"])
def test_producer_killed_mid_stream(spawn, free_port, tmp_path, proto):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, "--in-proto", proto, "--out-proto", proto,
    )  # fmt: skip
    outs = [tmp_path / f"c{i}.json" for i in range(2)]
    cons = [
        consumer(spawn, f"tcp://127.0.0.1:{out_port}", o, proto=proto, name=f"consumer{i}")
        for i, o in enumerate(outs)
    ]
    in_url = f"tcp://127.0.0.1:{in_port}"
    per_producer = 600
    victim = producer(spawn, in_url, 0, 100_000, "--sizes", str(SIZE), "--delay", "0.002",
                      proto=proto)  # fmt: skip
    others = [
        producer(spawn, in_url, p, per_producer, "--sizes", str(SIZE), "--delay", "0.004",
                 proto=proto)
        for p in (1, 2)
    ]  # fmt: skip
    wait_until(lambda: last_count(victim, "sent") >= 100, 60, "the victim to send 100")
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    for p in others:
        assert wait_exit(p, 60) == 0, p.stderr()
    assert wait_exit(buf, 60) == 0, buf.stderr()
    for c in cons:
        assert wait_exit(c, 30) == 0, c.stderr()
    results = [load_received(o) for o in outs]
    survivors_only = [{**r, "received": [x for x in r["received"] if x[0] != 0]} for r in results]
    check_delivery(survivors_only, {1: per_producer, 2: per_producer})
    # the victim's messages: each at most once, in order, and without gaps (a prefix)
    victim_seqs = sorted(s for r in results for p, s in r["received"] if p == 0)
    assert victim_seqs == list(range(len(victim_seqs))) and len(victim_seqs) >= 50
    m = final_metrics(buf)
    assert m["state"] == "done"
    assert m["recvd"] == m["sent"] == 2 * per_producer + len(victim_seqs)
