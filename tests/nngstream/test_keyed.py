"""Keyed routing (`--route-by`): every message with the same key reaches the same consumer
group, keys are spread over the groups, each group is told how many messages it was
given (info message) before the end message, and messages without a key are counted.
A real buffer process, real NNG producers and consumers on 127.0.0.1."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter, defaultdict

import msgpack
import pynng
import pytest

from nngstream.acked import AckedConsumer
from nngstream.keyed import Unroutable, group_for, routing_key

from .helpers import final_metrics, metrics_lines, start_buffer, wait_exit, wait_until

pytestmark = pytest.mark.timeout(120)
FRAMES, SECTORS = 60, 4


def _message(frame: int, sector: int, payload: bytes = b"\x07" * 4096) -> bytes:
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


def _consume(url: str, out: dict, name: str, groups: int | None = None) -> None:
    cons = AckedConsumer(url, groups=groups)
    frames: list[int] = []
    try:
        for _producer, _seq, payload in cons.messages(lambda: len(frames)):
            frames.append(routing_key(payload, "frame_number"))
    finally:
        cons.close()
    out[name] = (frames, cons.info, cons.end)


def _saved_pairs(folder) -> set[tuple[int, int]]:
    """(frame, sector) of every message `nngstream pull --out` saved whole. It
    acknowledges a message after saving it, so a file cut short by kill -9 is one it had
    not acknowledged (the buffer sends it again elsewhere): not counted as received."""
    pairs = set()
    for p in folder.glob("*.msg"):
        data = p.read_bytes()
        if data.endswith(b"\x07" * 4096):
            pairs.add((routing_key(data, "frame_number"), routing_key(data, "sector")))
    return pairs


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


def test_route_by_on_an_nng_out_needs_an_nng_in(spawn, free_port):
    buf = start_buffer(
        spawn, free_port(), free_port(), "--route-by", "frame_number", "--in-proto", "zmq",
        wait=False,
    )  # fmt: skip
    assert wait_exit(buf, 30) == 2
    assert "--route-by with an NNG OUT needs an NNG IN" in buf.stderr()


def test_at_most_once_keyed_routing_counts_what_a_group_took_with_it(spawn, free_port, tmp_path):
    """Keyed routing without --delivery acked: a group stopped (SIGSTOP) then killed takes
    the messages it had not acknowledged with it; the buffer counts them in lost_max, an
    upper bound of what the survivor and the victim together are missing."""
    buf, m, victim_pairs, out, frames = _kill_a_group(spawn, free_port, tmp_path, stop_first=True)
    assert m["recvd"] == frames * SECTORS and m["redelivered"] == 0
    survivor_frames, info, end = out
    assert end is not None and end.lost_max == m["lost_max"]
    missing = frames * SECTORS - len(victim_pairs) - len(survivor_frames)
    assert missing > 0 and m["lost_max"] >= missing
    assert "may have been lost" in buf.stderr()


def test_a_group_that_leaves_hands_its_keys_to_the_others(spawn, free_port, tmp_path):
    """A consumer group killed mid-stream (SIGKILL): what it had not acknowledged is routed
    again to the group left, later keys all go there, and nothing is lost."""
    buf, m, victim_pairs, out, frames = _kill_a_group(
        spawn, free_port, tmp_path, "--delivery", "acked", stop_first=False
    )
    assert m["recvd"] == frames * SECTORS and m["lost_max"] == 0

    survivor_frames, info, end = out
    assert end is not None and info is not None and info.groups == 1
    assert info.expected == len(survivor_frames)
    everything = {(f, s) for f in range(frames) for s in range(SECTORS)}
    per_frame_survivor = Counter(survivor_frames)
    for f in range(frames):
        at_victim = sum((f, s) in victim_pairs for s in range(SECTORS))
        assert at_victim + per_frame_survivor[f] >= SECTORS, f"frame {f}: sectors lost"
    assert victim_pairs <= everything
    # after the victim left, every later key went to the survivor
    last_at_victim = max(f for f, _ in victim_pairs)
    assert all(per_frame_survivor[f] == SECTORS for f in range(last_at_victim + 1, frames))


def _kill_a_group(spawn, free_port, tmp_path, *options: str, stop_first: bool):
    """A keyed buffer (with `options`), a victim group (`nngstream pull --out`) and a
    survivor; producers send 400 frames slowly; once the victim saved 40 messages it is
    killed (stopped for 1 s first if `stop_first`, so the stream fills its credit).
    Returns the buffer, its final metrics, the victim's saved (frame, sector) pairs, the
    survivor's (frames, info, end) and the number of frames."""
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, *options, "--route-by", "frame_number",
        "--producers", str(SECTORS), "--metrics-interval", "0.2",
    )  # fmt: skip
    url = f"tcp://127.0.0.1:{out_port}"
    saved = tmp_path / "victim"
    victim = spawn(
        ["nngstream", "pull", url, "--delivery", "acked", "--out", str(saved)], name="victim"
    )
    wait_until(lambda: any(m.get("consumers") == 1 for m in metrics_lines(buf)), 30, "victim")
    out: dict = {}
    survivor = threading.Thread(target=_consume, args=(url, out, "survivor"))
    survivor.start()
    wait_until(lambda: any(m.get("consumers") == 2 for m in metrics_lines(buf)), 30, "2 consumers")
    frames = 400
    producers = [
        threading.Thread(target=_produce_slowly, args=(f"tcp://127.0.0.1:{in_port}", s, frames))
        for s in range(SECTORS)
    ]
    for t in producers:
        t.start()
    wait_until(
        lambda: saved.exists() and len(list(saved.glob("*.msg"))) >= 40, 60, "victim gets 40"
    )
    if stop_first:
        victim.signal(signal.SIGSTOP)
        time.sleep(1.0)  # the stream goes on until the victim's credit is used up
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    for t in producers:
        t.join(120)
    survivor.join(120)
    assert wait_exit(buf, 60) == 0, buf.stderr()
    return buf, final_metrics(buf), _saved_pairs(saved), out["survivor"], frames


def _produce_slowly(url: str, sector: int, frames: int) -> None:
    with pynng.Push0(dial=url, send_timeout=20_000) as sock:
        for frame in range(frames):
            sock.send(_message(frame, sector))
            time.sleep(0.002)


def test_keys_wait_for_every_group_a_job_announced(spawn, free_port):
    """A consumer job of 2 groups says so in its credit (`groups`): keys are not routed
    while only its first group is connected, then they are spread over both."""
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, "--delivery", "acked", "--route-by", "frame_number",
        "--producers", str(SECTORS), "--metrics-interval", "0.2",
    )  # fmt: skip
    url, out = f"tcp://127.0.0.1:{out_port}", {}
    first = threading.Thread(target=_consume, args=(url, out, "first", 2))
    first.start()
    wait_until(lambda: any(m.get("consumers") == 1 for m in metrics_lines(buf)), 30, "1 group")
    producers = [
        threading.Thread(target=_produce, args=(f"tcp://127.0.0.1:{in_port}", s, []))
        for s in range(SECTORS)
    ]
    for t in producers:
        t.start()
    wait_until(lambda: metrics_lines(buf)[-1]["recvd"] == FRAMES * SECTORS, 30, "all received")
    time.sleep(0.5)  # the first group alone: nothing routed (checked below by the shares)
    assert metrics_lines(buf)[-1]["sent"] == 0
    second = threading.Thread(target=_consume, args=(url, out, "second", 2))
    second.start()
    for t in [*producers, first, second]:
        t.join(60)
    assert wait_exit(buf, 60) == 0, buf.stderr()
    shares = {name: sorted(set(frames)) for name, (frames, _, _) in out.items()}
    assert sorted(len(v) for v in shares.values()) == [FRAMES // 2] * 2
    assert set(shares["first"]).isdisjoint(shares["second"])


def test_chain_aggregator_to_two_site_buffers_keeps_keys_together(spawn, free_port, tmp_path):
    """An aggregator with keyed routing, two per-site buffers dialing its OUT as its
    consumer groups (`--dial-in --in-delivery acked`), one consumer per site: every
    message arrives once, every frame's sectors at one site, and each buffer ends."""
    in_port, out_port = free_port(), free_port()
    agg = start_buffer(
        spawn, in_port, out_port, "--delivery", "acked", "--route-by", "frame_number",
        "--producers", str(SECTORS), "--metrics-interval", "0.2", name="aggregator",
    )  # fmt: skip
    sites, pulls = [], []
    for i in range(2):
        site_out = free_port()
        site = spawn(
            ["nngstream", f"tcp://127.0.0.1:{out_port}", f"tcp://127.0.0.1:{site_out}",
             "--dial-in", "--in-delivery", "acked", "--metrics-interval", "0.2"],
            name=f"site{i}",
        )  # fmt: skip
        site.wait_port(site_out)
        sites.append(site)
        pulls.append(
            spawn(
                [
                    "nngstream",
                    "pull",
                    f"tcp://127.0.0.1:{site_out}",
                    "--out",
                    str(tmp_path / f"site{i}"),
                ],
                name=f"pull{i}",
            )  # fmt: skip
        )
    wait_until(lambda: any(m.get("consumers") == 2 for m in metrics_lines(agg)), 30, "2 sites")
    producers = [
        threading.Thread(target=_produce, args=(f"tcp://127.0.0.1:{in_port}", s, []))
        for s in range(SECTORS)
    ]
    for t in producers:
        t.start()
    for t in producers:
        t.join(60)
    assert wait_exit(agg, 60) == 0, agg.stderr()
    for proc in [*sites, *pulls]:
        assert wait_exit(proc, 60) == 0, proc.stderr()
    where: dict[int, set[int]] = defaultdict(set)
    seen: Counter = Counter()
    for i in range(2):
        for p in (tmp_path / f"site{i}").glob("*.msg"):
            data = p.read_bytes()
            frame, sector = routing_key(data, "frame_number"), routing_key(data, "sector")
            assert data.endswith(b"\x07" * 4096)  # the payload, envelope removed
            seen[(frame, sector)] += 1
            where[frame].add(i)
    assert seen == Counter({(f, s): 1 for f in range(FRAMES) for s in range(SECTORS)})
    assert all(len(v) == 1 for v in where.values()), "a frame reached two sites"
    assert {i for v in where.values() for i in v} == {0, 1}
    for site in sites:
        m = final_metrics(site)
        assert m["state"] == "done" and m["recvd"] == m["sent"] > 0
