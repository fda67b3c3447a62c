"""`--spill DIR`: messages beyond the memory bound wait on disk, in order, and nothing is
lost when the buffer exits normally."""

from __future__ import annotations

import pytest

from nngstream.errors import NngstreamError
from nngstream.models import BufferSettings
from nngstream.spill import Spill

from .helpers import (
    check_delivery,
    consumer,
    final_metrics,
    load_received,
    metrics_lines,
    producer,
    start_buffer,
    wait_exit,
)


def _new(size: int) -> tuple[bytearray, memoryview]:
    data = bytearray(size)
    return data, memoryview(data)


def test_spill_keeps_order_across_segments_and_drops_read_segments(tmp_path):
    spill = Spill(tmp_path, max_bytes=10_000, segment_bytes=100)
    payloads = [bytes([i]) * (10 + i) for i in range(30)]
    for p in payloads[:20]:
        spill.write(memoryview(p))
    assert (spill.messages, spill.nbytes) == (20, sum(map(len, payloads[:20])))
    assert spill.segments > 3
    assert list(spill.dir.iterdir()) == []  # segments are unlinked at creation
    got = [bytes(spill.read(_new)[0]) for _ in range(10)]
    for p in payloads[20:]:  # interleaved writes and reads
        spill.write(memoryview(p))
    got += [bytes(spill.read(_new)[0]) for _ in range(20)]
    assert got == payloads
    assert (spill.messages, spill.nbytes, spill.total_messages) == (0, 0, 30)
    assert spill.segments == 1  # only the one being written is left
    with pytest.raises(IndexError):
        spill.read(_new)
    spill.close()
    assert not spill.dir.exists()


def test_spill_keeps_each_message_stamp(tmp_path):
    spill = Spill(tmp_path, max_bytes=1 << 20, segment_bytes=200_000, stamp_size=16)
    payloads = [bytes([i]) * (70_000 if i % 2 else 10) for i in range(8)]  # aligned and not
    for i, p in enumerate(payloads):
        spill.write(memoryview(p), i.to_bytes(16, "big"))
    assert spill.nbytes == sum(map(len, payloads))  # the bound counts payloads only
    got = [spill.read(_new) for _ in payloads]
    assert [(bytes(item), size, stamp) for item, size, stamp in got] == [
        (p, len(p), i.to_bytes(16, "big")) for i, p in enumerate(payloads)
    ]
    spill.close()


def test_spill_bound_and_clear(tmp_path):
    spill = Spill(tmp_path, max_bytes=100)
    assert spill.fits(1000)  # an empty spill takes one message of any size
    spill.write(memoryview(b"x" * 60))
    assert spill.fits(40) and not spill.fits(41)
    assert spill.clear() == 1 and spill.messages == 0
    spill.close()


def test_spill_directory_that_cannot_be_used(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(NngstreamError, match="cannot use spill directory .*--spill"):
        Spill(blocker / "sub", max_bytes=100)


def test_spill_needs_block():
    with pytest.raises(ValueError, match="--spill keeps every message"):
        BufferSettings(
            in_url="tcp://127.0.0.1:1", out_url="tcp://127.0.0.1:2", spill="/tmp",
            when_full="drop-oldest",
        )  # fmt: skip


@pytest.mark.timeout(120)
@pytest.mark.parametrize("proto, delivery", [("nng", "at-most-once"), ("zmq", "at-most-once"),
                                             ("nng", "acked")])  # fmt: skip
def test_spill_three_times_max_bytes_without_consumer(spawn, free_port, tmp_path, proto, delivery):
    in_port, out_port = free_port(), free_port()
    spill_dir = tmp_path / "spill"
    buf = start_buffer(
        spawn, in_port, out_port, "--in-proto", proto, "--out-proto", proto,
        "--max-bytes", "4MiB", "--spill", str(spill_dir), "--metrics-interval", "0.2",
        "--producers", "2", "--delivery", delivery,
    )  # fmt: skip
    per_producer, size = 100, 64 * 1024  # 2 x 6.25 MiB = 3.1 x --max-bytes
    prods = [
        producer(spawn, f"tcp://127.0.0.1:{in_port}", p, per_producer, "--sizes", str(size),
                 proto=proto)
        for p in range(2)
    ]  # fmt: skip
    for p in prods:  # not blocked: they finish with no consumer connected
        assert wait_exit(p, 60) == 0, p.stderr()
    lines = metrics_lines(buf)
    assert lines[-1]["consumers"] == 0
    assert not any(m["blocked"] for m in lines)
    out = tmp_path / "late.json"
    acked = ("--acked",) if delivery == "acked" else ()
    late = consumer(spawn, f"tcp://127.0.0.1:{out_port}", out, *acked, proto=proto, name="late")
    assert wait_exit(buf, 60) == 0, buf.stderr()
    assert wait_exit(late, 30) == 0, late.stderr()
    result = load_received(out)
    check_delivery([result], {0: per_producer, 1: per_producer})  # exactly once, in order
    m = final_metrics(buf)
    assert m["spilled"] > 0 and m["spilled_bytes"] >= 2 * 1024 * 1024 and m["spill_held"] == 0
    assert (m["state"], m["sent"], m["buffered"]) == ("done", 2 * per_producer, 0)
    assert result["end"]["sent"] == 2 * per_producer
    assert list(spill_dir.iterdir()) == []  # the run's spill folder is removed
