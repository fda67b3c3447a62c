"""Full buffer: `block` throttles producers within the memory bound and loses nothing;
drop policies count exactly what they drop; with no consumer the data is held."""

from __future__ import annotations

import time

import psutil
import pytest

from .helpers import (
    check_delivery,
    consumer,
    final_metrics,
    last_count,
    load_received,
    metrics_lines,
    producer,
    start_buffer,
    wait_exit,
    wait_until,
)

MIB = 1024 * 1024


@pytest.mark.timeout(120)
def test_block_bounds_memory_and_throttles_producers(spawn, free_port, tmp_path):
    size, per_producer, max_bytes = 256 * 1024, 600, 16 * MIB
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, "--max-bytes", "16MiB", "--metrics-interval", "0.2"
    )
    ps = psutil.Process(buf.pid)
    time.sleep(0.5)
    baseline = ps.memory_info().rss
    out = tmp_path / "slow.json"
    slow = consumer(spawn, f"tcp://127.0.0.1:{out_port}", out, "--delay", "0.004", name="slow")
    prods = [
        producer(spawn, f"tcp://127.0.0.1:{in_port}", p, per_producer, "--sizes", str(size))
        for p in range(2)
    ]
    peak, gap = baseline, 0
    while buf.popen.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        sent = sum(last_count(p, "sent") for p in prods)
        gap = max(gap, sent - last_count(slow, "got"))
        time.sleep(0.05)
    assert wait_exit(buf, 5) == 0, buf.stderr()
    assert wait_exit(slow, 30) == 0
    check_delivery([load_received(out)], {0: per_producer, 1: per_producer})
    m = final_metrics(buf)
    assert (m["state"], m["dropped"], m["sent"]) == ("done", 0, 2 * per_producer)
    # the buffer itself never held more than the bound ...
    assert max(x["buffered_bytes"] for x in metrics_lines(buf)) <= max_bytes
    # ... and its memory grew by at most the bound plus a small constant (NNG's queues
    # hold a few more messages, allocator slack), far below the 300 MiB streamed
    growth = peak - baseline
    print(f"RSS growth {growth / MIB:.1f} MiB, producers ahead by at most {gap} messages")
    assert growth <= max_bytes + 24 * MIB, f"RSS grew by {growth / MIB:.1f} MiB"
    # producers were held back: they were never far ahead of the slow consumer
    # (bound + NNG queues + kernel socket buffers + progress-line granularity),
    # whereas unthrottled they would finish while it had read a fraction.
    assert gap <= max_bytes // size + 250, f"producers ran {gap} messages ahead"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("policy", ["drop-oldest", "drop-newest"])
def test_drop_policies_count_what_they_drop(spawn, free_port, tmp_path, policy):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, "--max-messages", "20", "--when-full", policy,
        "--metrics-interval", "0.2",
    )  # fmt: skip
    # no consumer yet: the producer fills the buffer, then leaves
    prod = producer(spawn, f"tcp://127.0.0.1:{in_port}", 0, 500, "--sizes", "16384")
    assert wait_exit(prod, 30) == 0, prod.stderr()
    wait_until(lambda: any(m["state"] == "draining" for m in metrics_lines(buf)), 20, "draining")
    out = tmp_path / "late.json"
    late = consumer(spawn, f"tcp://127.0.0.1:{out_port}", out, name="late")
    assert wait_exit(buf, 30) == 0, buf.stderr()
    assert wait_exit(late, 30) == 0
    got = [s for _, s in load_received(out)["received"]]
    m = final_metrics(buf)
    assert m["recvd"] == 500
    assert m["dropped"] == 500 - len(got) == m["recvd"] - m["sent"]
    assert got == sorted(got) and len(got) <= 22  # bound, plus the one in the sender's hand
    if policy == "drop-oldest":
        assert got[-1] == 499  # the newest survive
        assert got[-19:] == list(range(481, 500))
    else:
        assert got[:20] == list(range(20))  # the oldest survive
        assert got[-1] < 30


@pytest.mark.timeout(60)
def test_holds_data_until_a_consumer_connects(spawn, free_port, tmp_path):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(spawn, in_port, out_port, "--metrics-interval", "0.2")
    prod = producer(spawn, f"tcp://127.0.0.1:{in_port}", 0, 300, "--sizes", "20000")
    assert wait_exit(prod, 30) == 0, prod.stderr()
    wait_until(lambda: final_metrics(buf)["buffered"] >= 299, 20, "the buffer to hold all")
    time.sleep(1.0)
    assert buf.popen.poll() is None, "the buffer ended with data and no consumer"
    m = final_metrics(buf)
    assert (m["state"], m["consumers"], m["sent"]) == ("draining", 0, 0)
    out = tmp_path / "c.json"
    late = consumer(spawn, f"tcp://127.0.0.1:{out_port}", out, name="late")
    assert wait_exit(buf, 30) == 0, buf.stderr()
    assert wait_exit(late, 30) == 0
    check_delivery([load_received(out)], {0: 300})
    assert final_metrics(buf)["sent"] == 300


@pytest.mark.timeout(60)
def test_full_without_consumer_says_producers_are_blocked(spawn, free_port, tmp_path):
    """The README's old trap: more than --max-bytes and no consumer. The metrics flag it
    and a warning says so (rate-limited); a consumer arriving later gets everything."""
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(spawn, in_port, out_port, "--max-bytes", "1MiB", "--metrics-interval", "0.2")
    prod = producer(spawn, f"tcp://127.0.0.1:{in_port}", 0, 80, "--sizes", str(64 * 1024))
    wait_until(lambda: any(m["blocked"] for m in metrics_lines(buf)), 20, "the blocked flag")
    wait_until(lambda: "producers are blocked" in buf.stderr(), 20, "the warning")
    assert buf.stderr().count("producers are blocked") == 1  # not once per tick
    out = tmp_path / "late.json"
    late = consumer(spawn, f"tcp://127.0.0.1:{out_port}", out, name="late")
    assert wait_exit(prod, 30) == 0, prod.stderr()
    assert wait_exit(buf, 30) == 0, buf.stderr()
    assert wait_exit(late, 30) == 0, late.stderr()
    assert len(load_received(out)["received"]) == 80
    assert final_metrics(buf)["blocked"] is False
