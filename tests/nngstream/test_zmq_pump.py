"""The one-thread pump of a plain ZMQ IN and OUT (nngstream/zmqpump.py), on real sockets.

The stream, end-of-stream, kill -9, loss and spill tests parametrized with "zmq" run
through it too; these cover what only it does: being chosen, holding a message while the
FIFO is full, and the drop policies on ZMQ.
"""

from __future__ import annotations

import threading

import pytest
import zmq

from nngstream import Buffer, BufferSettings, State
from nngstream.models import decode_control, is_control
from tests.support.waiting import wait_until


def settings(free_port, in_proto: str = "zmq", out_proto: str = "zmq", **kw) -> BufferSettings:
    return BufferSettings(
        in_url=f"tcp://127.0.0.1:{free_port()}",
        out_url=f"tcp://127.0.0.1:{free_port()}",
        in_proto=in_proto,
        out_proto=out_proto,
        metrics_interval=0.1,
        **kw,
    )


def pump_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name in ("pump", "rx", "tx")}


def produce(ctx: zmq.Context, url: str, count: int, size: int) -> threading.Thread:
    """A producer thread sending `count` numbered messages of `size` bytes (blocking)."""

    def run() -> None:
        sock = ctx.socket(zmq.PUSH)
        sock.connect(url)
        for i in range(count):
            sock.send(i.to_bytes(4, "big") * (size // 4))
        sock.close(linger=-1)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def consume(ctx: zmq.Context, url: str) -> tuple[list[int], dict]:
    """Numbers of the messages received until the end message, and its fields."""
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVTIMEO, 20_000)
    sock.connect(url)
    got = []
    try:
        while True:
            data = sock.recv()
            if is_control(data):
                return got, decode_control(data).model_dump()
            got.append(int.from_bytes(data[:4], "big"))
    finally:
        sock.close(linger=0)


def start_consumer(ctx: zmq.Context, url: str) -> tuple[threading.Thread, dict]:
    """`consume` in a thread; its result lands in the dict as "got" and "end"."""
    result: dict = {}

    def run() -> None:
        result["got"], result["end"] = consume(ctx, url)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "in_proto, out_proto, threads",
    [("zmq", "zmq", {"pump"}), ("nng", "nng", {"rx", "tx"}), ("nng", "zmq", {"rx", "tx"})],
)
def test_one_thread_only_for_plain_zmq(free_port, in_proto, out_proto, threads):
    assert not pump_threads()  # no buffer of another test is still running
    with Buffer(settings(free_port, in_proto, out_proto), out=None) as buf:
        assert pump_threads() == threads
        buf.stop()
        assert buf.wait(10) is State.DONE
    wait_until(lambda: not pump_threads(), 10, "the pump threads to end")


@pytest.mark.timeout(90)
def test_full_fifo_holds_producers_then_stop_delivers_in_order(free_port):
    """No consumer, 4 messages of room: the pump holds one more and stops reading (the
    metrics say producers are blocked); a consumer then gets everything that arrived,
    in order, and the end message's totals."""
    s = settings(free_port, max_messages=4)
    ctx = zmq.Context()
    try:
        with Buffer(s, out=None) as buf:
            prod = produce(ctx, s.in_url, 200, 4096)
            wait_until(lambda: buf.metrics().recvd == 5, 20, "4 messages held and 1 waiting")
            wait_until(lambda: buf.metrics().blocked, 20, "the blocked flag")
            assert buf.metrics().recvd == 5  # no more read while there is no room
            cons, result = start_consumer(ctx, s.out_url)
            wait_until(lambda: buf.metrics().sent > 20, 20, "messages flowing again")
            buf.stop()
            assert buf.wait(30) is State.DONE
            cons.join(30)
            m = buf.metrics()
        prod.join(30)
    finally:
        ctx.term()
    got, end = result["got"], result["end"]
    assert got == list(range(len(got)))  # one producer: in order, none missing
    assert len(got) == m.recvd == m.sent == end["recvd"] == end["sent"]
    assert end["dropped"] == m.dropped == 0 and end["lost_max"] == 0


@pytest.mark.timeout(90)
@pytest.mark.parametrize("policy", ["drop-oldest", "drop-newest"])
def test_drop_policies_on_zmq(free_port, policy):
    """No consumer, room for 4: the pump keeps reading and drops per policy; every
    message is either delivered or counted as dropped."""
    s = settings(free_port, max_messages=4, when_full=policy)
    ctx = zmq.Context()
    try:
        with Buffer(s, out=None) as buf:
            produce(ctx, s.in_url, 50, 1024).join(30)
            wait_until(lambda: buf.metrics().recvd == 50, 20, "all 50 messages read")
            cons, result = start_consumer(ctx, s.out_url)
            wait_until(lambda: buf.metrics().sent == 4, 20, "the 4 kept messages sent")
            buf.stop()
            assert buf.wait(30) is State.DONE
            cons.join(30)
            m = buf.metrics()
    finally:
        ctx.term()
    got = result["got"]
    if policy == "drop-newest":
        assert got == [0, 1, 2, 3]  # the first arrivals
    else:  # the newest, and one the sending side had taken before the newer ones came
        assert got[1:] == [47, 48, 49] and got[0] < 47
    assert (m.recvd, m.sent, m.dropped) == (50, 4, 46)
    assert (result["end"]["sent"], result["end"]["dropped"]) == (4, 46)
