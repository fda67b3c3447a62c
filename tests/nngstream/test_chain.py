"""Two buffers stacked (--dial-in / --dial-out) deliver everything end to end."""

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
@pytest.mark.parametrize(
    ("proto", "how"),
    [("nng", "dial-in"), ("nng", "dial-out"), ("zmq", "dial-in"), ("zmq", "dial-out")],
)
def test_chain_of_two_buffers(spawn, free_port, tmp_path, proto, how):
    a_in, a_out, b_in, b_out = (free_port() for _ in range(4))
    p = ("--in-proto", proto, "--out-proto", proto)
    if how == "dial-in":
        # A listens on both sides; B pulls from A's OUT as a consumer.
        first = start_buffer(spawn, a_in, a_out, *p, "--producers", "3", name="first")
        second = spawn(
            ["nngstream", f"tcp://127.0.0.1:{a_out}", f"tcp://127.0.0.1:{b_out}", *p, "--dial-in"],
            name="second",
        )
        second.wait_port(b_out)
    else:
        # B listens on both sides; A pushes into B's IN as a producer.
        second = start_buffer(spawn, b_in, b_out, *p, name="second")
        first = spawn(
            [
                "nngstream",
                f"tcp://127.0.0.1:{a_in}",
                f"tcp://127.0.0.1:{b_in}",
                *p,
                "--dial-out",
                "--producers",
                "3",
            ],
            name="first",
        )
        first.wait_port(a_in)
    outs = [tmp_path / f"c{i}.json" for i in range(2)]
    cons = [
        consumer(spawn, f"tcp://127.0.0.1:{b_out}", o, proto=proto, name=f"c{i}")
        for i, o in enumerate(outs)
    ]
    prods = [producer(spawn, f"tcp://127.0.0.1:{a_in}", i, 400, proto=proto) for i in range(3)]
    for pr in prods:
        assert wait_exit(pr, 60) == 0, pr.stderr()
    assert wait_exit(first, 60) == 0, first.stderr()
    assert wait_exit(second, 60) == 0, second.stderr()
    for c in cons:
        assert wait_exit(c, 30) == 0, c.stderr()
    check_delivery([load_received(o) for o in outs], {i: 400 for i in range(3)})
    for buf in (first, second):
        m = final_metrics(buf)
        assert (m["state"], m["recvd"], m["sent"], m["dropped"]) == ("done", 1200, 1200, 0)
