"""`--producers N`: a producer that connects after the others have left is still taken.

Without it, the stream ends when every producer that came has left (DESIGN 3.3), so a
slow MPI rank that dials late would be refused. The transfer service passes the rank
count, which is what this tests.
"""

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


@pytest.mark.timeout(90)
@pytest.mark.parametrize("proto", ["nng", "zmq"])
def test_late_producer_is_taken_when_expected(spawn, free_port, tmp_path, proto):
    in_port, out_port = free_port(), free_port()
    p = ("--in-proto", proto, "--out-proto", proto)
    buf = start_buffer(spawn, in_port, out_port, *p, "--producers", "2", name="buffer")
    out = tmp_path / "c.json"
    cons = consumer(spawn, f"tcp://127.0.0.1:{out_port}", out, proto=proto, name="c0")
    first = producer(spawn, f"tcp://127.0.0.1:{in_port}", 0, 50, proto=proto)
    assert wait_exit(first, 60) == 0, first.stderr()
    # The only producer so far has left; the buffer must keep waiting for the second.
    assert buf.popen.poll() is None
    second = producer(spawn, f"tcp://127.0.0.1:{in_port}", 1, 50, proto=proto)
    assert wait_exit(second, 60) == 0, second.stderr()
    assert wait_exit(buf, 60) == 0, buf.stderr()
    assert wait_exit(cons, 30) == 0, cons.stderr()
    check_delivery([load_received(out)], {0: 50, 1: 50})
    m = final_metrics(buf)
    assert (m["state"], m["recvd"], m["sent"], m["dropped"]) == ("done", 100, 100, 0)
