"""AckedConsumer's manual acknowledgement (`manual_ack`, `release`, `on_idle`): a message
is acknowledged only once the caller released it, so what it held unreleased when it
left goes to the next consumer. A real buffer process, real NNG on 127.0.0.1."""

from __future__ import annotations

import threading

import pynng
import pytest

from nngstream.acked import AckedConsumer

from .helpers import final_metrics, metrics_lines, start_buffer, wait_exit, wait_until

pytestmark = pytest.mark.timeout(120)
N, CREDIT = 40, 8


def _ids(payloads: list[bytes]) -> list[int]:
    return [int.from_bytes(p, "little") for p in payloads]


def test_unreleased_messages_are_not_acknowledged_and_go_to_the_next_consumer(spawn, free_port):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, "--delivery", "acked", "--producers", "1",
        "--metrics-interval", "0.1",
    )  # fmt: skip
    url = f"tcp://127.0.0.1:{out_port}"
    idle = threading.Event()
    a = AckedConsumer(url, credit=CREDIT, manual_ack=True, on_idle=idle.set)
    it = a.messages(lambda: 0)
    held: list[bytes] = []
    t = threading.Thread(target=lambda: held.append(bytes(next(it)[2])))
    t.start()
    assert idle.wait(30), "on_idle was not called while nothing arrived"
    with pynng.Push0(dial=f"tcp://127.0.0.1:{in_port}", send_timeout=20_000) as push:
        for i in range(N):
            push.send(i.to_bytes(4, "little"))
    t.join(30)
    held += [bytes(next(it)[2]) for _ in range(CREDIT - 1)]
    assert a.outstanding == CREDIT
    wait_until(lambda: metrics_lines(buf)[-1]["recvd"] == N, 30, "all received")
    wait_until(lambda: len(metrics_lines(buf)) > 5, 30, "metrics")
    assert metrics_lines(buf)[-1]["sent"] == CREDIT  # nothing released: no more credit

    a.release(3)
    assert a.outstanding == CREDIT  # released, not yet acknowledged
    a.ack()
    # the acknowledgement of 3 arrived: the buffer sends 3 more within the credit
    wait_until(lambda: metrics_lines(buf)[-1]["sent"] == CREDIT + 3, 30, "3 more sent")
    a.sock.close()  # leaves holding 5 unreleased + 3 new: all 8 go back

    b = AckedConsumer(url)
    rest = [bytes(p) for _, _, p in b.messages(lambda: 0)]
    b.close()
    assert wait_exit(buf, 60) == 0, buf.stderr()
    assert sorted(_ids(held[:3]) + _ids(rest)) == list(range(N))  # each exactly once
    assert final_metrics(buf)["redelivered"] == CREDIT
