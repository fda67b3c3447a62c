"""The in-process API: Buffer(settings) behaves like the CLI."""

from __future__ import annotations

import io
import json
import threading

import pynng
import pytest

from nngstream import Buffer, BufferSettings, NngstreamError, State
from nngstream.tools import pull, push
from tests.support.waiting import wait_until


def settings(free_port, **kw) -> BufferSettings:
    return BufferSettings(
        in_url=f"tcp://127.0.0.1:{free_port()}",
        out_url=f"tcp://127.0.0.1:{free_port()}",
        metrics_interval=0.1,
        **kw,
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("proto", ["nng", "zmq"])
def test_buffer_in_process(free_port, tmp_path, proto):
    s = settings(free_port, in_proto=proto, out_proto=proto)
    files = []
    for i in range(20):
        f = tmp_path / f"m{i:02d}.bin"
        f.write_bytes(bytes([i]) * (1000 + i * 5000))
        files.append(f)
    out = io.StringIO()
    with Buffer(s, out=out) as buf:
        assert buf.state is State.WAITING
        result = {}
        t = threading.Thread(
            target=lambda: result.setdefault("r", pull(s.out_url, proto, out_dir=tmp_path / "o"))
        )
        t.start()
        sent = push(files, s.in_url, proto)
        assert buf.wait(30) is State.DONE
        t.join(30)
    assert sent.messages == result["r"].messages == 20
    got = sorted(p.read_bytes() for p in (tmp_path / "o").glob("*.msg"))
    assert got == sorted(f.read_bytes() for f in files)
    m = buf.metrics()
    assert (m.state, m.recvd, m.sent, m.buffered, m.producers, m.consumers) == (
        State.DONE, 20, 20, 0, 0, 0
    )  # fmt: skip
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert lines[-1]["state"] == "done" and lines[-1]["bytes_out"] == sent.bytes


@pytest.mark.timeout(30)
def test_stop_and_abort(free_port):
    buf = Buffer(settings(free_port), out=None).start()
    buf.stop()
    assert buf.wait(10) is State.DONE
    s = settings(free_port)
    buf = Buffer(s, out=None).start()
    with pynng.Push0(dial=s.in_url) as p:
        p.send(b"held")
    buf.abort()
    assert buf.wait(10) is State.FAILED
    with pytest.raises(RuntimeError, match="starts once"):
        buf.start()


@pytest.mark.timeout(30)
def test_start_reports_unusable_addresses(free_port):
    s = settings(free_port)
    with Buffer(s, out=None):
        clash = BufferSettings(in_url=s.in_url, out_url=f"tcp://127.0.0.1:{free_port()}")
        with pytest.raises(NngstreamError, match="cannot listen on IN address"):
            Buffer(clash, out=None).start()
    # the first buffer released its ports: they can be used again
    again = Buffer(s, out=None).start()
    again.stop()
    assert again.wait(10) is State.DONE


@pytest.mark.timeout(60)
def test_acked_payloads_are_views_that_outlive_the_next_message(free_port):
    """AckedConsumer yields views of the received messages (no copy); each view keeps its
    message alive, so payloads kept across iterations, or slices of them, stay intact
    after the messages after them arrived and were acknowledged."""
    from nngstream.acked import AckedConsumer

    s = settings(free_port, delivery="acked")
    sent = [bytes([i]) * (70_000 + i) for i in range(40)]
    with Buffer(s, out=None) as buf:
        consumer = AckedConsumer(s.out_url, credit=4)
        _push_all(buf, s.in_url, sent)
        kept = []
        for _producer, seq, payload in consumer.messages(lambda: len(kept)):
            assert isinstance(payload, memoryview)
            kept.append((seq, payload if seq % 2 else payload[1:]))  # slices too
        consumer.close()
        assert buf.wait(30) is State.DONE
    assert consumer.end is not None and consumer.end.sent == len(sent)
    got = {seq: bytes(view) for seq, view in kept}
    assert got == {i: d if i % 2 else d[1:] for i, d in enumerate(sent)}


@pytest.mark.timeout(60)
def test_acked_payloads_of_any_size_arrive_exact_and_taken_back_ones_come_again(free_port):
    """The acked outlet sends a new message (envelope + payload) and keeps the one it
    received: payloads of a power of two (no room in front in NNG), odd sizes and 1 MiB
    arrive byte for byte; those a consumer took and never acknowledged come again,
    intact, to the next consumer."""
    from nngstream.acked import AckedConsumer

    s = settings(free_port, delivery="acked")
    sizes = [1 << 20, 1024, 4096, 1000, 65_536, (1 << 20) + 1, 1]
    sent = [bytes([(i * 7 + k) % 251 for k in range(251)]) * (n // 251) + b"x" * (n % 251)
            for i, n in enumerate(sizes)]  # fmt: skip
    with Buffer(s, out=None) as buf:
        first = AckedConsumer(s.out_url, credit=4, manual_ack=True)  # never releases
        _push_all(buf, s.in_url, sent)
        taken = []
        for _producer, seq, payload in first.messages(lambda: len(taken)):
            taken.append((seq, bytes(payload)))
            if len(taken) == 3:
                break
        first.sock.close()  # gone without acknowledging anything
        second = AckedConsumer(s.out_url, credit=4)
        got = {}
        for _producer, seq, payload in second.messages(lambda: len(got)):
            assert seq not in got
            got[seq] = bytes(payload)
        second.close()
        assert buf.wait(30) is State.DONE
    assert [seq for seq, _ in taken] == [0, 1, 2]
    assert all(data == sent[seq] for seq, data in taken)
    assert got == dict(enumerate(sent))
    assert second.end is not None and second.end.sent == len(sent)


def _push_all(buf: Buffer, url: str, sent: list[bytes]) -> None:
    """Send `sent` to the buffer's IN and wait until it received them all."""
    with pynng.Push0(dial=url) as p:
        for data in sent:
            p.send(data)
        wait_until(lambda: buf.metrics().recvd == len(sent), 10, "the buffer has all")


def test_owned_body_frees_the_message_with_its_last_view():
    import gc
    import weakref

    from nngstream.nngio import new_message, owned_body

    msg, view = new_message(5)
    view[:] = b"abcde"
    del view
    body = owned_body(msg)
    part = body[1:4]
    probe = weakref.ref(body.obj)  # the cffi buffer that owns the message
    del body
    gc.collect()
    assert probe() is not None and bytes(part) == b"bcd"  # the slice keeps it alive
    del part
    gc.collect()
    assert probe() is None  # gone with the last view: nng_msg_free ran
