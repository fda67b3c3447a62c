"""Keyed routing on ZMQ (`--route-by frame_number --in-proto zmq --out-proto zmq`): the
NERSC wire format (two-part messages: msgpack header, raw array) kept whole end to end,
every message of a key at one consumer group, keys spread over the groups, the info
counts, the end of stream, a killed buffer, and a group that leaves mid-stream.

Real processes: the buffer, 4 producer processes (ZMQ PUSH, multipart), consumer groups
`nngstream pull --proto zmq --keyed` on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import msgpack
import pytest
import zmq

from nngstream import Buffer, BufferSettings, State
from nngstream.keyed import routing_key
from nngstream.zmqkeyed import DEFAULT_CREDIT, ZmqKeyedConsumer

from .helpers import ROOT, final_metrics, metrics_lines, start_buffer, wait_exit, wait_until

pytestmark = pytest.mark.timeout(180)
FRAMES, SECTORS = 60, 4
PAYLOAD = b"\x07" * 4096
ZMQ_KEYED = ("--in-proto", "zmq", "--out-proto", "zmq", "--route-by", "frame_number")


def _header(frame: int, sector: int) -> bytes:
    return msgpack.packb(
        {"scan_number": 1, "frame_number": frame, "sector": sector, "shape": [64, 32],
         "dtype": "<u2"}
    )  # fmt: skip


def produce(url: str, sector: int, frames: int, pause: float, bad: bool) -> None:
    """(a producer process) Send `frames` two-part sector messages, then (`bad`) two
    messages without a readable key."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 30_000)
    sock.connect(url)
    for frame in range(frames):
        sock.send_multipart([_header(frame, sector), PAYLOAD])
        if pause:
            time.sleep(pause)
    if bad:
        sock.send(b"\x07no header")
        sock.send_multipart([msgpack.packb({"sector": 9}), PAYLOAD])
    sock.close()
    ctx.term()


def _producers(spawn, port: int, frames: int = FRAMES, pause: float = 0.0) -> list:
    return [
        spawn(
            [
                sys.executable,
                "-m",
                "tests.nngstream.test_keyed_zmq",
                f"tcp://127.0.0.1:{port}",
                str(s),
                str(frames),
                str(pause),
                "1" if s == 0 and not pause else "0",
            ],
            name=f"producer{s}",
            cwd=ROOT,
        )  # fmt: skip
        for s in range(SECTORS)
    ]


def _pull(spawn, port: int, out: Path, name: str, *extra: str):
    return spawn(
        ["nngstream", "pull", f"tcp://127.0.0.1:{port}", "--proto", "zmq", "--keyed",
         "--out", str(out), *extra],
        name=name, cwd=ROOT,
    )  # fmt: skip


def _saved(folder: Path) -> list[tuple[int, int]]:
    """(frame, sector) of every message a `pull --keyed --out` saved, parts end to end."""
    got = []
    for p in sorted(folder.glob("*.msg")):
        data = p.read_bytes()
        assert data.endswith(PAYLOAD), f"{p}: the array part is missing or cut"
        got.append((routing_key(data, "frame_number"), routing_key(data, "sector")))
    return got


def _report(proc) -> dict:
    return json.loads(proc.stdout().strip().splitlines()[-1])


def test_keys_meet_on_one_group_and_the_parts_stay_together(spawn, free_port, tmp_path):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, *ZMQ_KEYED, "--producers", str(SECTORS),
        "--metrics-interval", "0.2",
    )  # fmt: skip
    pulls = [
        _pull(spawn, out_port, tmp_path / f"g{i}", f"pull{i}", "--groups", "2") for i in range(2)
    ]
    wait_until(lambda: any(m.get("consumers") == 2 for m in metrics_lines(buf)), 30, "2 groups")
    producers = _producers(spawn, in_port)
    for p in producers:
        assert wait_exit(p, 60) == 0, p.stderr()
    assert wait_exit(buf, 60) == 0, buf.stderr()
    for p in pulls:
        assert wait_exit(p, 60) == 0, p.stderr()
    m = final_metrics(buf)
    bad = 2
    assert m["recvd"] == FRAMES * SECTORS + bad
    assert m["sent"] == FRAMES * SECTORS + bad  # the two without a key: dropped, counted
    assert m["lost_max"] == bad
    assert "keyed routing: message header is a int, not a map" in buf.stderr()

    where: dict[int, set[int]] = defaultdict(set)
    for i in range(2):
        got = _saved(tmp_path / f"g{i}")
        report = _report(pulls[i])
        assert report["expected"] == report["messages"] == len(got)  # the info message
        assert report["end"]["recvd"] == FRAMES * SECTORS + bad
        for (frame, _sector), n in Counter(got).items():
            assert n == 1
            where[frame].add(i)
        per_frame = Counter(f for f, _ in got)
        assert all(n == SECTORS for n in per_frame.values()), "a frame's sectors split"
    assert sorted(where) == list(range(FRAMES))
    assert all(len(v) == 1 for v in where.values()), "a frame reached two groups"
    # keys spread evenly: the job announced 2 groups, frame mod 2 picks the group
    assert (
        sorted(len(list((tmp_path / f"g{i}").glob("*.msg"))) for i in range(2))
        == [FRAMES * SECTORS // 2] * 2
    )


def test_kill_9_of_the_buffer_breaks_the_stream_for_every_group(spawn, free_port, tmp_path):
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, *ZMQ_KEYED, "--producers", str(SECTORS),
        "--metrics-interval", "0.2",
    )  # fmt: skip
    pulls = [_pull(spawn, out_port, tmp_path / f"g{i}", f"pull{i}") for i in range(2)]
    wait_until(lambda: any(m.get("consumers") == 2 for m in metrics_lines(buf)), 30, "2 groups")
    producers = _producers(spawn, in_port, frames=2000, pause=0.002)
    wait_until(lambda: metrics_lines(buf)[-1]["sent"] > 100, 60, "mid-stream")
    buf.signal(signal.SIGKILL)
    for p in pulls:
        assert wait_exit(p, 30) != 0
        assert "stream broken after" in p.stderr(), p.stderr()
    for p in producers:
        p.signal(signal.SIGKILL)


def test_a_group_leaving_mid_stream_is_counted_as_loss(spawn, free_port, tmp_path):
    """At-most-once: a group stopped (SIGSTOP) then killed takes what it had not
    acknowledged with it; the buffer counts it in lost_max (an upper bound of what is
    missing), its keys go to the group left, and the survivor reports the loss."""
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, *ZMQ_KEYED, "--producers", str(SECTORS),
        "--metrics-interval", "0.2",
    )  # fmt: skip
    victim = _pull(spawn, out_port, tmp_path / "victim", "victim")
    wait_until(lambda: any(m.get("consumers") == 1 for m in metrics_lines(buf)), 30, "victim")
    survivor = _pull(spawn, out_port, tmp_path / "survivor", "survivor")
    wait_until(lambda: any(m.get("consumers") == 2 for m in metrics_lines(buf)), 30, "2 groups")
    frames = 400
    producers = _producers(spawn, in_port, frames=frames, pause=0.002)
    saved = tmp_path / "victim"
    wait_until(
        lambda: saved.exists() and len(list(saved.glob("*.msg"))) >= 40, 60, "victim gets 40"
    )
    victim.signal(signal.SIGSTOP)
    time.sleep(1.0)  # the stream goes on until the victim's credit is used up
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    for p in producers:
        assert wait_exit(p, 120) == 0, p.stderr()
    assert wait_exit(buf, 60) == 0, buf.stderr()
    assert wait_exit(survivor, 60) == 0, survivor.stderr()
    m = final_metrics(buf)
    assert m["recvd"] == frames * SECTORS
    victim_got = set(_saved(saved))
    survivor_got = _saved(tmp_path / "survivor")
    missing = frames * SECTORS - len(victim_got) - len(survivor_got)
    assert missing > 0 and m["lost_max"] >= missing
    report = _report(survivor)
    assert report["end"]["lost_max"] == m["lost_max"]
    assert report["expected"] == len(survivor_got)
    assert f"the buffer reports up to {m['lost_max']} message(s) lost" in survivor.stderr()
    assert "a consumer group left with" in buf.stderr()
    # the victim could hold no more than its credit unacknowledged: that bounds the loss
    assert m["lost_max"] <= DEFAULT_CREDIT
    # once the victim was gone, every later key went to the survivor, whole
    per_frame = Counter(f for f, _ in survivor_got)
    at_victim = Counter(f for f, _ in victim_got)
    short = [f for f in range(frames) if per_frame[f] + at_victim[f] < SECTORS]
    assert short and max(short) < frames - 100
    assert all(per_frame[f] == SECTORS for f in range(max(short) + 1, frames))


def test_no_group_yet_spills_and_a_late_job_gets_every_key_whole(spawn, free_port, tmp_path):
    """Fallback to disk on ZMQ: with no consumer group connected the buffer spills
    (`--spill`, memory bound far below the stream); a job of 2 groups connecting after
    the producers finished gets every message once, each frame at one group."""
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, *ZMQ_KEYED, "--producers", str(SECTORS),
        "--metrics-interval", "0.2", "--max-bytes", "64KiB", "--spill", str(tmp_path / "spill"),
    )  # fmt: skip
    for p in _producers(spawn, in_port):
        assert wait_exit(p, 60) == 0, p.stderr()
    wait_until(lambda: metrics_lines(buf)[-1]["spill_held"] > 0, 30, "spilled")
    pulls = [
        _pull(spawn, out_port, tmp_path / f"g{i}", f"pull{i}", "--groups", "2") for i in range(2)
    ]
    assert wait_exit(buf, 60) == 0, buf.stderr()
    for p in pulls:
        assert wait_exit(p, 60) == 0, p.stderr()
    m = final_metrics(buf)
    assert m["spilled"] > 0 and m["lost_max"] == 2  # the two messages without a key
    where: dict[int, set[int]] = defaultdict(set)
    seen: Counter = Counter()
    for i in range(2):
        for frame, sector in _saved(tmp_path / f"g{i}"):
            seen[(frame, sector)] += 1
            where[frame].add(i)
        assert _report(pulls[i])["expected"] == _report(pulls[i])["messages"]
    assert seen == Counter({(f, s): 1 for f in range(FRAMES) for s in range(SECTORS)})
    assert all(len(v) == 1 for v in where.values()) and len(where) == FRAMES


def test_keys_wait_for_every_group_a_job_announced(spawn, free_port, tmp_path):
    """A job of 2 groups says so in its hello (`--groups 2`): no key is routed while only
    its first group is connected, then keys are spread over both."""
    in_port, out_port = free_port(), free_port()
    buf = start_buffer(
        spawn, in_port, out_port, *ZMQ_KEYED, "--producers", str(SECTORS),
        "--metrics-interval", "0.2",
    )  # fmt: skip
    first = _pull(spawn, out_port, tmp_path / "first", "first", "--groups", "2")
    wait_until(lambda: any(m.get("consumers") == 1 for m in metrics_lines(buf)), 30, "1 group")
    for p in _producers(spawn, in_port):
        assert wait_exit(p, 60) == 0, p.stderr()
    wait_until(lambda: metrics_lines(buf)[-1]["recvd"] == FRAMES * SECTORS + 2, 30, "all in")
    time.sleep(0.5)  # the first group alone: nothing routed
    assert metrics_lines(buf)[-1]["sent"] <= 2  # at most the two without a key, dropped
    second = _pull(spawn, out_port, tmp_path / "second", "second", "--groups", "2")
    assert wait_exit(buf, 60) == 0, buf.stderr()
    for p in (first, second):
        assert wait_exit(p, 60) == 0, p.stderr()
    shares = {name: {f for f, _ in _saved(tmp_path / name)} for name in ("first", "second")}
    assert sorted(len(v) for v in shares.values()) == [FRAMES // 2] * 2
    assert shares["first"].isdisjoint(shares["second"])


def test_consumers_that_come_and_go_at_once_leave_no_group_behind(free_port):
    """Consumers that say hello and close at once (their file descriptors are reused by
    the next): the buffer (in-process, real sockets) forgets each, and the consumer that
    stays gets every key, with nothing counted lost."""
    settings = BufferSettings(
        in_url=f"tcp://127.0.0.1:{free_port()}", out_url=f"tcp://127.0.0.1:{free_port()}",
        in_proto="zmq", out_proto="zmq", route_by="frame_number", producers=1,
        metrics_interval=0.2,
    )  # fmt: skip
    got: list[int] = []
    with Buffer(settings, out=None) as buf:
        for _ in range(5):
            ZmqKeyedConsumer(buf.out_url).close()
        consumer = ZmqKeyedConsumer(buf.out_url)

        def consume() -> None:
            for parts in consumer.messages(lambda: len(got)):
                got.append(routing_key(parts[0], "frame_number"))

        reader = threading.Thread(target=consume)
        reader.start()
        produce(buf.in_url, 0, FRAMES, 0.0, False)
        reader.join(60)
        consumer.close()
        assert buf.wait(60) is State.DONE
        m = buf.metrics()
    assert sorted(got) == list(range(FRAMES))
    assert m.lost_max == 0 and m.sent == FRAMES
    assert consumer.info is not None and consumer.info.expected == FRAMES


def test_pull_keyed_on_a_plain_zmq_out_says_what_it_needs(spawn, free_port):
    in_port, out_port = free_port(), free_port()
    start_buffer(spawn, in_port, out_port, "--in-proto", "zmq", "--out-proto", "zmq")
    proc = _pull(spawn, out_port, Path("unused"), "pull", "--dial-timeout", "1")
    assert wait_exit(proc, 30) == 1
    assert "a keyed consumer needs the OUT of `nngstream --route-by" in proc.stderr()


def test_chain_aggregator_to_two_site_buffers_over_zmq(spawn, free_port, tmp_path):
    """A keyed ZMQ aggregator, two per-site buffers dialing its OUT as its consumer groups
    (`--dial-in --in-proto zmq --in-delivery acked`), one consumer per site (plain ZMQ
    PUSH/PULL): every message arrives once and whole (two parts kept together through
    both buffers), every frame's sectors at one site, and every process ends with 0."""
    in_port, out_port = free_port(), free_port()
    agg = start_buffer(
        spawn, in_port, out_port, *ZMQ_KEYED, "--producers", str(SECTORS),
        "--metrics-interval", "0.2", name="aggregator",
    )  # fmt: skip
    sites, pulls = [], []
    for i in range(2):
        site_out = free_port()
        site = spawn(
            ["nngstream", f"tcp://127.0.0.1:{out_port}", f"tcp://127.0.0.1:{site_out}",
             "--dial-in", "--in-proto", "zmq", "--in-delivery", "acked", "--out-proto", "zmq",
             "--metrics-interval", "0.2"],
            name=f"site{i}", cwd=ROOT,
        )  # fmt: skip
        site.wait_port(site_out)
        sites.append(site)
        pulls.append(
            spawn(
                [
                    "nngstream",
                    "pull",
                    f"tcp://127.0.0.1:{site_out}",
                    "--proto",
                    "zmq",
                    "--out",
                    str(tmp_path / f"site{i}"),
                ],
                name=f"pull{i}",
                cwd=ROOT,
            )  # fmt: skip
        )
    wait_until(lambda: any(m.get("consumers") == 2 for m in metrics_lines(agg)), 30, "2 sites")
    for p in _producers(spawn, in_port):
        assert wait_exit(p, 60) == 0, p.stderr()
    assert wait_exit(agg, 60) == 0, agg.stderr()
    for proc in [*sites, *pulls]:
        assert wait_exit(proc, 60) == 0, proc.stderr()
    bad = 2  # dropped and counted by the aggregator
    assert final_metrics(agg)["lost_max"] == bad
    where: dict[int, set[int]] = defaultdict(set)
    seen: Counter = Counter()
    for i in range(2):
        for frame, sector in _saved(tmp_path / f"site{i}"):
            seen[(frame, sector)] += 1
            where[frame].add(i)
    assert seen == Counter({(f, s): 1 for f in range(FRAMES) for s in range(SECTORS)})
    assert all(len(v) == 1 for v in where.values()), "a frame reached two sites"
    assert {i for v in where.values() for i in v} == {0, 1}
    for site in sites:
        m = final_metrics(site)
        assert m["state"] == "done" and m["recvd"] == m["sent"] > 0


@pytest.mark.parametrize(
    "args, why",
    [
        (["--route-by", "frame_number", "--out-proto", "zmq", "--dial-out"],
         "--route-by needs a listening OUT"),
        (["--route-by", "frame_number", "--in-proto", "zmq"],
         "--route-by with an NNG OUT needs an NNG IN"),
        (["--route-by", "frame_number", "--out-proto", "zmq", "--delivery", "acked"],
         "--delivery acked needs NNG on both sides"),
    ],
)  # fmt: skip
def test_keyed_zmq_refuses_what_it_cannot_do(spawn, free_port, args, why):
    buf = start_buffer(spawn, free_port(), free_port(), *args, wait=False)
    assert wait_exit(buf, 30) == 2
    assert why in buf.stderr()


@pytest.mark.parametrize(
    "args, why",
    [
        (["--keyed"], "--keyed is for a ZMQ OUT"),
        (["--proto", "zmq", "--groups", "2"], "--groups needs --keyed"),
        (["--proto", "zmq", "--keyed", "--check", "hdf5"], "cannot be combined with --keyed"),
    ],
)
def test_pull_keyed_refuses_what_it_cannot_do(spawn, free_port, args, why):
    proc = spawn(["nngstream", "pull", f"tcp://127.0.0.1:{free_port()}", *args], name="pull")
    assert wait_exit(proc, 30) == 1
    assert why in proc.stderr()


if __name__ == "__main__":
    url, sector, frames, pause, bad = sys.argv[1:]
    produce(url, int(sector), int(frames), float(pause), bad == "1")
