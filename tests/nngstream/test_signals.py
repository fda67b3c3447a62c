"""Lifecycle of a real buffer process: SIGTERM drains, a second SIGTERM ends at once,
idle timeout, waiting for the first producer."""

from __future__ import annotations

import signal
import time

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


@pytest.mark.timeout(60)
def test_sigterm_drains_what_it_holds_then_exits_0(spawn, free_port, tmp_path):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(spawn, in_port, out_port, "--metrics-interval", "0.2")
    prod = producer(spawn, f"tcp://127.0.0.1:{in_port}", 0, 100_000, "--sizes", "4096",
                    "--delay", "0.002")  # fmt: skip
    wait_until(lambda: last_count(prod, "sent") >= 100, 30, "100 messages sent")
    buf.signal(signal.SIGTERM)
    wait_until(lambda: any(m["state"] == "draining" for m in metrics_lines(buf)), 10, "draining")
    # no consumer yet: SIGTERM does not throw held data away
    time.sleep(0.5)
    assert buf.popen.poll() is None
    out = tmp_path / "c.json"
    late = consumer(spawn, f"tcp://127.0.0.1:{out_port}", out, name="late")
    assert wait_exit(buf, 30) == 0, buf.stderr()
    assert wait_exit(late, 30) == 0
    m = final_metrics(buf)
    got = load_received(out)["received"]
    assert m["state"] == "done" and m["recvd"] == m["sent"] == len(got) >= 100
    check_delivery([load_received(out)], {0: len(got)})  # a prefix, once, in order
    assert '"state streaming -> draining (stop)"' in buf.stderr().replace("'", '"')


@pytest.mark.timeout(60)
def test_second_sigterm_exits_at_once(spawn, free_port):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(spawn, in_port, out_port, "--metrics-interval", "0.2")
    prod = producer(spawn, f"tcp://127.0.0.1:{in_port}", 0, 50, "--sizes", "4096")
    assert wait_exit(prod, 30) == 0
    wait_until(lambda: final_metrics(buf)["buffered"] >= 49, 20, "data held")
    buf.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert buf.popen.poll() is None  # still holding data for a consumer
    buf.signal(signal.SIGTERM)
    assert wait_exit(buf, 5) == 1
    m = final_metrics(buf)
    assert m["state"] == "failed" and m["sent"] == 0 and m["buffered"] == 0


@pytest.mark.timeout(30)
def test_sigterm_while_waiting_exits_0(spawn, free_port):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(spawn, in_port, out_port)
    buf.signal(signal.SIGTERM)
    assert wait_exit(buf, 10) == 0
    states = [m["state"] for m in metrics_lines(buf)]
    assert states[0] == "waiting" and states[-1] == "done"


@pytest.mark.timeout(30)
def test_idle_timeout_without_producer_fails(spawn, free_port):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(spawn, in_port, out_port, "--idle-timeout", "1")
    assert wait_exit(buf, 10) == 1
    assert final_metrics(buf)["state"] == "failed"
    assert "idle for 1 s in state waiting" in buf.stderr()
    assert "Traceback" not in buf.stderr()


@pytest.mark.timeout(30)
def test_idle_timeout_when_nothing_drains(spawn, free_port):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(spawn, in_port, out_port, "--idle-timeout", "1.5")
    prod = producer(spawn, f"tcp://127.0.0.1:{in_port}", 0, 20, "--sizes", "1000")
    assert wait_exit(prod, 20) == 0
    assert wait_exit(buf, 15) == 1
    m = final_metrics(buf)
    assert (m["state"], m["recvd"], m["sent"]) == ("failed", 20, 0)
    assert "in state draining" in buf.stderr()


@pytest.mark.timeout(30)
def test_waits_for_the_first_producer(spawn, free_port, tmp_path):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(spawn, in_port, out_port, "--metrics-interval", "0.2")
    out = tmp_path / "c.json"
    cons = consumer(spawn, f"tcp://127.0.0.1:{out_port}", out, name="c")
    time.sleep(1.5)  # a consumer alone does not start or end the stream
    assert buf.popen.poll() is None
    assert {m["state"] for m in metrics_lines(buf)} == {"waiting"}
    prod = producer(spawn, f"tcp://127.0.0.1:{in_port}", 0, 10)
    assert wait_exit(prod, 20) == 0
    assert wait_exit(buf, 20) == 0
    assert wait_exit(cons, 20) == 0
    check_delivery([load_received(out)], {0: 10})
    states = [m["state"] for m in metrics_lines(buf)]
    assert states.index("waiting") < states.index("streaming") < states.index("draining")
    assert states[-1] == "done"
