"""Pure logic: sizes, the bounded FIFO, the lifecycle and settings.

(Callback signatures are tested in tests/certified/test_webhooks.py.)
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nngstream.fifo import BoundedFifo, WhenFull
from nngstream.lifecycle import Event, Observation, State, next_event, transition
from nngstream.models import BufferSettings, Metrics
from nngstream.sizes import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [
        ("4096", 4096),
        ("1B", 1),
        ("64MiB", 64 * 2**20),
        ("64mib", 64 * 2**20),
        ("8M", 8 * 2**20),
        ("1.5G", 3 * 2**29),
        ("2GB", 2_000_000_000),
        ("10 KiB", 10240),
        ("1k", 1024),
        ("1kB", 1000),
        ("1TiB", 2**40),
        (".5K", 512),
        (7, 7),
    ],
)
def test_parse_size(text, nbytes):
    assert parse_size(text) == nbytes


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "expected a number"),
        ("lots", "expected a number"),
        ("-5M", "expected a number"),
        ("12XB", "unknown unit"),
        ("1.5B", "whole number"),
        ("0", "at least 1 byte"),
        ("0.4", "whole number"),
        ("5 M B", "expected a number"),
        ("1e6", "expected a number"),
        (0, "at least 1 byte"),
        (True, "invalid size"),
    ],
)
def test_parse_size_rejects(text, why):
    with pytest.raises(ValueError, match=why):
        parse_size(text)


def test_format_size():
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(3 * 2**30) == "3 GiB"


def test_fifo_is_fifo_and_tracks_bytes():
    f: BoundedFifo[str] = BoundedFifo(100, 10, WhenFull.BLOCK)
    for i, size in enumerate((10, 20, 30)):
        assert f.fits(size)
        assert f.put(f"m{i}", size) == []
    assert (len(f), f.held, f.nbytes) == (3, 3, 60)
    assert f.pop() == ("m0", 10)
    # taken but not released: still held
    assert (len(f), f.held, f.nbytes, f.taken) == (2, 3, 60, 1)
    f.release(10)
    assert (len(f), f.held, f.nbytes, f.taken) == (2, 2, 50, 0)
    with pytest.raises(ValueError, match="without a matching pop"):
        f.release(10)
    assert f.clear() == ["m1", "m2"]
    assert (len(f), f.nbytes, f.dropped) == (0, 0, 0)
    with pytest.raises(IndexError):
        f.pop()


def test_fifo_taken_message_counts_against_the_bound():
    f: BoundedFifo[str] = BoundedFifo(100, 2, WhenFull.BLOCK)
    f.put("a", 80)
    f.pop()
    assert not f.fits(30)  # 80 bytes are still in memory
    assert f.fits(20)
    f.put("b", 20)
    assert not f.fits(0)  # two messages held
    f.release(80)
    assert f.fits(30)
    d: BoundedFifo[str] = BoundedFifo(100, 5, WhenFull.DROP_OLDEST)
    d.put("a", 80)
    d.pop()
    d.put("b", 10)
    assert d.put("c", 50) == ["b"]  # evicts what waits, never the taken one
    assert (d.nbytes, d.dropped) == (130, 1)  # admitted: only the taken one remained


def test_fifo_block_refuses_instead_of_overflowing():
    f: BoundedFifo[str] = BoundedFifo(100, 3, WhenFull.BLOCK)
    f.put("a", 60)
    assert not f.fits(41)
    assert f.fits(40)
    with pytest.raises(ValueError, match="wait until fits"):
        f.put("b", 41)
    f.put("b", 40)
    assert not f.fits(0) or len(f) < 3
    f.put("c", 0)
    assert not f.fits(0)  # message bound reached
    assert f.nbytes == 100 and f.dropped == 0


def test_fifo_admits_one_oversized_message_when_empty():
    f: BoundedFifo[str] = BoundedFifo(10, 5, WhenFull.BLOCK)
    assert f.fits(1000)
    f.put("big", 1000)
    assert not f.fits(1)
    assert f.pop() == ("big", 1000)


def test_fifo_add_appends_exactly_when_fits_says_so():
    """`add` is `fits` + append in one call (the ZMQ pump's read loop): the same bounds,
    including one oversized message admitted when nothing is held."""
    f: BoundedFifo[str] = BoundedFifo(100, 3, WhenFull.BLOCK)
    assert f.add("big", 1000) and not f.fits(0) and not f.add("x", 0)
    assert f.pop() == ("big", 1000)
    assert not f.add("x", 0)  # taken, not yet released: still counts
    f.release(1000)
    assert f.add("a", 60) and not f.add("b", 41) and f.add("b", 40) and f.add("c", 0)
    assert not f.add("d", 0)  # message bound reached
    assert (len(f), f.nbytes, f.dropped) == (3, 100, 0)
    assert [f.pop()[0] for _ in range(3)] == ["a", "b", "c"]


def test_fifo_drop_newest_counts():
    f: BoundedFifo[int] = BoundedFifo(1000, 2, WhenFull.DROP_NEWEST)
    assert f.put(1, 10) == [] and f.put(2, 10) == []
    assert f.put(3, 10) == [3]
    assert f.put(4, 30) == [4]
    assert (f.dropped, f.dropped_bytes) == (2, 40)
    assert [f.pop()[0], f.pop()[0]] == [1, 2]


def test_fifo_drop_oldest_evicts_until_it_fits():
    f: BoundedFifo[int] = BoundedFifo(100, 10, WhenFull.DROP_OLDEST)
    for i in range(5):
        f.put(i, 20)
    assert f.put(5, 50) == [0, 1, 2]
    assert (f.dropped, f.dropped_bytes, f.nbytes, len(f)) == (3, 60, 90, 3)
    assert [f.pop()[0] for _ in range(3)] == [3, 4, 5]
    f2: BoundedFifo[int] = BoundedFifo(100, 2, WhenFull.DROP_OLDEST)
    for i in range(5):
        f2.put(i, 1)
    assert (f2.dropped, [f2.pop()[0], f2.pop()[0]]) == (3, [3, 4])


def test_fifo_rejects_bad_bounds():
    with pytest.raises(ValueError):
        BoundedFifo(0, 1, WhenFull.BLOCK)
    with pytest.raises(ValueError):
        BoundedFifo(1, 0, "block")
    with pytest.raises(ValueError):
        BoundedFifo(1, 1, "sometimes")  # type: ignore[arg-type]


def test_transitions():
    W, S, D = State.WAITING, State.STREAMING, State.DRAINING
    assert transition(W, Event.PRODUCER_JOINED) is S
    assert transition(W, Event.STOP) is D
    assert transition(W, Event.IDLE_TIMEOUT) is State.FAILED
    assert transition(W, Event.PRODUCERS_GONE) is W
    assert transition(W, Event.DRAINED) is W
    assert transition(S, Event.PRODUCERS_GONE) is D
    assert transition(S, Event.STOP) is D
    assert transition(S, Event.IDLE_TIMEOUT) is S  # streaming never times out
    assert transition(S, Event.DRAINED) is S
    assert transition(D, Event.DRAINED) is State.DONE
    assert transition(D, Event.PRODUCER_JOINED) is D  # no new producers once draining
    assert transition(D, Event.IDLE_TIMEOUT) is State.FAILED
    for s in (W, S, D):
        assert transition(s, Event.ABORT) is State.FAILED
        assert transition(s, Event.ERROR) is State.FAILED
    for final in (State.DONE, State.FAILED):
        for e in Event:
            assert transition(final, e) is final


def _obs(**kw) -> Observation:
    base = dict(
        producers=0,
        producer_seen=False,
        stop_requested=False,
        abort_requested=False,
        output_finished=False,
        idle_for=0.0,
        idle_timeout=None,
    )
    base.update(kw)
    return Observation(**base)


def test_next_event():
    W, S, D = State.WAITING, State.STREAMING, State.DRAINING
    assert next_event(W, _obs()) is None
    assert next_event(W, _obs(idle_for=99.0)) is None  # no timeout configured
    assert next_event(W, _obs(idle_for=2.0, idle_timeout=2.0)) is Event.IDLE_TIMEOUT
    assert next_event(W, _obs(producers=1)) is Event.PRODUCER_JOINED
    # joined and left between two looks: still a join, then the end
    assert next_event(W, _obs(producer_seen=True)) is Event.PRODUCER_JOINED
    assert next_event(S, _obs(producers=2, producer_seen=True)) is None
    assert next_event(S, _obs(producers=0, producer_seen=True)) is Event.PRODUCERS_GONE
    assert next_event(S, _obs(producers=1, stop_requested=True)) is Event.STOP
    assert next_event(S, _obs(idle_for=1e9, idle_timeout=1.0, producers=1)) is None
    assert next_event(D, _obs()) is None
    assert next_event(D, _obs(output_finished=True)) is Event.DRAINED
    assert next_event(D, _obs(idle_for=3.0, idle_timeout=2.0)) is Event.IDLE_TIMEOUT
    assert next_event(S, _obs(abort_requested=True, stop_requested=True)) is Event.ABORT
    assert next_event(D, _obs(error=True, output_finished=True)) is Event.ERROR
    assert next_event(State.DONE, _obs(abort_requested=True)) is None


def _settings(**kw) -> BufferSettings:
    return BufferSettings(
        **{"in_url": "tcp://127.0.0.1:5000", "out_url": "tcp://127.0.0.1:5001", **kw}
    )


def test_settings_defaults_and_sizes():
    s = _settings(max_bytes="16MiB")
    assert (s.in_proto, s.out_proto, s.when_full, s.dial_in, s.dial_out) == (
        "nng", "nng", WhenFull.BLOCK, False, False
    )  # fmt: skip
    assert s.max_bytes == 16 * 2**20
    assert _settings(in_url="ipc:///tmp/x.sock", out_proto="zmq").out_proto == "zmq"


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"in_url": "http://127.0.0.1:5000"}, "invalid nng address"),
        ({"in_url": "tcp://127.0.0.1"}, "HOST:PORT"),
        ({"in_url": "tcp://127.0.0.1:99999"}, "HOST:PORT"),
        ({"out_url": "tcp://:5001"}, "HOST:PORT"),
        ({"out_url": "tcp://h:1/x"}, "no path"),
        ({"out_url": "ipc://"}, "needs a path"),
        ({"out_url": "127.0.0.1:5001"}, "invalid nng address"),
        ({"in_url": "tcp4://127.0.0.1:5000", "in_proto": "zmq"}, "invalid zmq address"),
        ({"in_proto": "mqtt"}, "in_proto"),
        ({"max_bytes": "lots"}, "invalid size"),
        ({"max_bytes": 0}, "at least 1 byte"),
        ({"max_messages": 0}, "greater than or equal to 1"),
        ({"metrics_interval": 0}, "greater than 0"),
        ({"idle_timeout": -1}, "greater than 0"),
        ({"when_full": "sometimes"}, "when_full"),
        ({"callback": "http://127.0.0.1:9/cb"}, "needs cb_secret"),
        ({"callback": "ftp://x/cb", "cb_secret": "s"}, "invalid callback URL"),
        ({"cb_secret": "s"}, "without a callback"),
        ({"certified_config": "/tmp"}, "only used for --callback"),
        ({"out_url": "tcp://127.0.0.1:5000"}, "same address"),
        ({"surprise": 1}, "Extra inputs"),
    ],
)
def test_settings_reject(kw, why):
    with pytest.raises(ValidationError, match=why):
        _settings(**kw)


def test_metrics_model_is_strict():
    fields = dict(
        time=1.0, state="streaming", producers=1, consumers=2, recvd=3, sent=2, dropped=0,
        buffered=1, buffered_bytes=10, bytes_in=30, bytes_out=20, rate_in=1.0, rate_out=2.0,
    )  # fmt: skip
    assert Metrics(**fields).state is State.STREAMING
    with pytest.raises(ValidationError):
        Metrics(**fields, extra=1)
    with pytest.raises(ValidationError):
        Metrics(**{**fields, "state": "sleeping"})


def test_rate_meter_intervals():
    from nngstream.metrics import RateMeter

    m = RateMeter()
    t0 = m._t
    assert m.rates(1000, 500, now=t0 + 2.0) == (500.0, 250.0)
    # a look without update does not start a new interval
    assert m.rates(3000, 500, update=False, now=t0 + 4.0) == (1000.0, 0.0)
    assert m.rates(3000, 500, now=t0 + 4.0) == (1000.0, 0.0)
    assert m.rates(3000, 500, now=t0 + 4.0) == (0.0, 0.0)  # no time passed


def test_expected_producers_hold_the_end_until_all_have_joined():
    S = State.STREAMING
    # Two of three expected ranks came and left: not the end yet.
    early = _obs(producers=0, producer_seen=True, producers_joined=2, producers_expected=3)
    assert next_event(S, early) is None
    done = _obs(producers=0, producer_seen=True, producers_joined=3, producers_expected=3)
    assert next_event(S, done) is Event.PRODUCERS_GONE
    # A reconnecting rank counts again; more joins than expected still end the stream.
    assert next_event(S, _obs(producer_seen=True, producers_joined=4, producers_expected=3)) is (
        Event.PRODUCERS_GONE
    )


def test_control_messages_round_trip_and_are_never_data():
    from nngstream.models import (
        CONTROL_PREFIX,
        Ack,
        Credit,
        EndOfStream,
        ProducerTotals,
        decode_consumer_control,
        decode_control,
        encode_control,
        is_control,
    )

    end = EndOfStream(recvd=3, sent=3, bytes=30, dropped=0, lost_max=0,
                      producers={"7": ProducerTotals(messages=3, bytes=30)})  # fmt: skip
    wire = encode_control(end)
    assert wire.startswith(CONTROL_PREFIX) and is_control(memoryview(wire))
    assert decode_control(wire) == end
    assert decode_consumer_control(encode_control(Ack(n=4))) == Ack(n=4)
    assert decode_consumer_control(encode_control(Credit(credit=2))).credit == 2
    for data in (b"\x89HDF\r\n", b"", CONTROL_PREFIX + b"{not json", b"\x00NNG"):
        if is_control(data):
            with pytest.raises(ValueError):
                decode_control(data)
        else:
            with pytest.raises(ValueError, match="not an nngstream control message"):
                decode_control(data)
    with pytest.raises(ValueError):
        decode_consumer_control(encode_control(end))  # an end message is not a credit/ack


def test_sequence_check_counts_gaps_duplicates_and_order():
    from nngstream.accounting import SequenceCheck

    check = SequenceCheck()
    for p, s in [(0, 0), (0, 2), (0, 1), (0, 2), (1, 5)]:
        check.add(p, s)
    r = check.report()
    assert (r["gaps"], r["duplicates"], r["out_of_order"]) == (5, 1, 1)
    assert r["producers"]["1"] == {"messages": 1, "highest": 5, "gaps": 5,
                                   "missing": [0, 1, 2, 3, 4]}  # fmt: skip


def test_round_robin_and_port_zero_addresses():
    from nngstream.routing import RoundRobin
    from nngstream.sides import asked_port_zero, with_port

    rr = RoundRobin()
    assert [rr.choose(["a", "b"]) for _ in range(4)] == ["b", "a", "b", "a"]
    assert rr.choose(["only"]) == "only"
    assert asked_port_zero("tcp://127.0.0.1:0") and not asked_port_zero("tcp://h:5")
    assert not asked_port_zero("ipc:///tmp/x")
    assert with_port("tcp://0.0.0.0:0", 5001) == "tcp://0.0.0.0:5001"
    assert with_port("tcp://[::1]:0", 7) == "tcp://[::1]:7"


def test_acked_and_spill_settings_are_checked():
    from nngstream.models import BufferSettings

    with pytest.raises(ValueError, match="--delivery acked needs NNG on both sides"):
        BufferSettings(in_url="tcp://h:1", out_url="tcp://h:2", out_proto="zmq",
                       delivery="acked")  # fmt: skip
    acked = BufferSettings(in_url="tcp://h:1", out_url="tcp://h:2", spill="/tmp", delivery="acked")
    assert acked.spill is not None  # the spill keeps acked delivery's stamps
    s = BufferSettings(in_url="tcp://h:0", out_url="tcp://h:0", spill_max_bytes="2GiB")
    assert s.spill_max_bytes == 2 * 1024**3  # port 0 twice: two different free ports


def test_certified_config_tilde_is_the_home_of_the_account_running_it(monkeypatch, tmp_path):
    """lclstream-api passes `~/.config/certified` to buffers that run as their users."""
    monkeypatch.setenv("HOME", str(tmp_path))
    s = _settings(callback="https://lclstream/cb", cb_secret="s", certified_config="~/.config/c")
    assert s.certified_config == tmp_path / ".config" / "c"


def test_buffer_process_keeps_freed_message_memory():
    """The thresholds are ones glibc (Linux, where the buffer runs) accepts."""
    from nngstream.malloc import reuse_freed_memory

    assert reuse_freed_memory() is True
