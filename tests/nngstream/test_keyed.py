"""Keyed routing (`--route-by`): every message with the same key reaches the same consumer
group, keys are spread over the groups, each group is told how many messages it was
given (info message) before the end message, and messages without a key are counted.
A real buffer process, real NNG producers and consumers on 127.0.0.1."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict

import msgpack
import pynng
import pytest

from nngstream.acked import AckedConsumer
from nngstream.keyed import Unroutable, group_for, routing_key

from .helpers import final_metrics, metrics_lines, start_buffer, wait_exit, wait_until

pytestmark = pytest.mark.timeout(120)
FRAMES, SECTORS = 60, 4


def _message(frame: int, sector: int, payload: bytes = b"\x07" * 256) -> bytes:
    header = {"scan_number": 1, "frame_number": frame, "sector": sector, "shape": [16, 8]}
    return msgpack.packb(header) + payload


def test_routing_key_reads_the_header_only():
    msg = _message(41, 2, b"\x00" * 10_000)
    assert routing_key(memoryview(msg), "frame_number") == 41
    assert group_for(41, ["a", "b"]) == "b" and group_for(40, ["a", "b"]) == "a"


@pytest.mark.parametrize(
    "data, why",
    [
        (b"\x07not msgpack at all", "not a map"),
        (msgpack.packb({"sector": 1}) + b"xx", "no integer field 'frame_number'"),
        (msgpack.packb({"frame_number": "7"}), "no integer field 'frame_number'"),
        (msgpack.packb({"frame_number": True}), "no integer field 'frame_number'"),
        (b"\xdf\xff\xff\xff\xff", "does not start with a msgpack header"),
    ],
)
def test_routing_key_refuses_bad_headers(data, why):
    with pytest.raises(Unroutable, match=why):
        routing_key(data, "frame_number")


def _consume(url: str, out: dict, name: str) -> None:
    cons = AckedConsumer(url)
    frames: list[int] = []
    try:
        for _producer, _seq, payload in cons.messages(lambda: len(frames)):
            frames.append(routing_key(payload, "frame_number"))
    finally:
        cons.close()
    out[name] = (frames, cons.info, cons.end)


def _produce(url: str, sector: int, extra: list[bytes]) -> None:
    with pynng.Push0(dial=url, send_timeout=20_000) as sock:
        for frame in range(FRAMES):
            sock.send(_message(frame, sector))
        for data in extra:
            sock.send(data)


def test_keys_meet_on_one_group_and_groups_learn_their_counts(spawn, free_port):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, "--delivery", "acked", "--route-by", "frame_number",
        "--producers", str(SECTORS), "--metrics-interval", "0.2",
    )  # fmt: skip
    out: dict = {}
    url = f"tcp://127.0.0.1:{out_port}"
    consumers = [threading.Thread(target=_consume, args=(url, out, f"c{i}")) for i in range(2)]
    for t in consumers:
        t.start()
    wait_until(lambda: any(m.get("consumers") == 2 for m in metrics_lines(buf)), 30, "2 consumers")
    bad = [b"\x07no header", msgpack.packb({"sector": 9})]
    producers = [
        threading.Thread(
            target=_produce, args=(f"tcp://127.0.0.1:{in_port}", s, bad if s == 0 else [])
        )
        for s in range(SECTORS)
    ]
    for t in producers:
        t.start()
    for t in producers + consumers:
        t.join(60)
    assert wait_exit(buf, 60) == 0, buf.stderr()
    m = final_metrics(buf)
    assert m["recvd"] == FRAMES * SECTORS + len(bad)
    assert m["lost_max"] == len(bad)  # the two messages without a key, counted
    assert "keyed routing: message header is a int, not a map" in buf.stderr()

    where: dict[int, set[str]] = defaultdict(set)
    for name, (frames, _info, _end) in out.items():
        for f, n in Counter(frames).items():
            assert n == SECTORS, f"frame {f}: {n} sectors at {name}"
            where[f].add(name)
    assert sorted(where) == list(range(FRAMES))
    assert all(len(v) == 1 for v in where.values()), "a frame reached two groups"
    # keys spread evenly: frame mod 2 picks the group
    shares = sorted(len(frames) for frames, _, _ in out.values())
    assert shares == [FRAMES * SECTORS // 2] * 2
    for frames, info, end in out.values():
        assert info is not None and info.route_by == "frame_number"
        assert info.expected == len(frames) and info.groups == 2
        assert end is not None and end.recvd == FRAMES * SECTORS + len(bad)


def test_route_by_needs_acked_delivery(spawn, free_port):
    buf = start_buffer(spawn, free_port(), free_port(), "--route-by", "frame_number", wait=False)
    assert wait_exit(buf, 30) == 2
    assert "--route-by needs --delivery acked" in buf.stderr()
