"""A tiny producer/consumer toolkit: push files into a buffer, pull messages out of one."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import zmq

from . import nngio
from .accounting import SequenceCheck, hdf5_rank_seq
from .errors import NngstreamError, StreamBroken
from .models import Delivery, EndOfStream, Proto, check_url
from .nngio import NngInlet, NngOutlet
from .zmqio import ZmqInlet, ZmqOutlet


@dataclass
class Report:
    """What one push or pull moved."""

    messages: int = 0
    bytes: int = 0
    seconds: float = 0.0
    end: EndOfStream | None = None  # pull: the buffer's end message
    duplicates: int = 0  # pull, acked delivery: messages received again and dropped
    sequence: dict | None = None  # pull --check hdf5: per-producer gaps (accounting.py)
    expected: int | None = None  # pull --keyed: messages the buffer's info message gave

    @property
    def rate(self) -> float:
        """bytes per second"""
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "messages": self.messages,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
        }
        if self.end is not None:
            out["end"] = self.end.model_dump()
        if self.duplicates:
            out["duplicates"] = self.duplicates
        if self.sequence is not None:
            out["sequence"] = self.sequence
        if self.expected is not None:
            out["expected"] = self.expected
        return out


Progress = Callable[[Report], None]


def _load(path: Path, proto: Proto) -> tuple[object, int]:
    """One file as a message ready to send (read straight into the message body)."""
    size = path.stat().st_size
    if size == 0:
        raise NngstreamError(f"{path}: empty file (empty messages mark the end of a stream)")
    if proto is Proto.NNG:
        msg, view = nngio.new_message(size)
        with path.open("rb") as f:
            if f.readinto(view) != size:
                nngio.NngOutlet.discard(msg)
                raise NngstreamError(f"{path}: changed size while being read")
        return msg, size
    return zmq.Frame(path.read_bytes()), size


def push(
    files: Sequence[Path],
    url: str,
    proto: Proto = Proto.NNG,
    *,
    dial: int = 1,
    dial_timeout: float = 10.0,
    linger: float = 5.0,
) -> Report:
    """Send every file as one message to `url` over `dial` connections (files dealt to
    them in turn, each connection keeps its files' order); returns once all are written."""
    proto = Proto(proto)
    check_url(url, proto)
    if dial < 1:
        raise NngstreamError("--dial must be at least 1")
    for f in files:
        if not f.is_file():
            raise NngstreamError(f"{f}: no such file")
        if f.stat().st_size == 0:
            raise NngstreamError(f"{f}: empty file (empty messages mark the end of a stream)")
    ctx = zmq.Context() if proto is Proto.ZMQ else None
    outlets: list[NngOutlet | ZmqOutlet] = []
    report = Report()
    lock = threading.Lock()
    errors: list[str] = []
    abort = threading.Event()

    def run(outlet: NngOutlet | ZmqOutlet, share: Sequence[Path]) -> None:
        sent = 0
        try:
            for path in share:
                item, size = _load(path, proto)
                while not outlet.send(item):
                    if abort.is_set():
                        outlet.discard(item)
                        return
                sent += 1
                with lock:
                    report.messages += 1
                    report.bytes += size
            outlet.finish(sent, linger, abort, lambda: None)
        except Exception as exc:
            errors.append(str(exc) if isinstance(exc, NngstreamError) else repr(exc))
            abort.set()

    t0 = time.monotonic()
    try:
        for _ in range(dial):
            kw = {"dial": True, "dial_timeout": dial_timeout, "on_change": lambda: None}
            outlets.append(ZmqOutlet(ctx, url, **kw) if ctx else NngOutlet(url, **kw))
        threads = [
            threading.Thread(target=run, args=(o, files[i::dial]), daemon=True)
            for i, o in enumerate(outlets)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for o in outlets:
            if isinstance(o, ZmqOutlet):
                o.close(-1 if not errors else 0)
            else:
                o.close()
        if ctx is not None:
            ctx.term()
    report.seconds = time.monotonic() - t0
    if errors:
        raise NngstreamError(errors[0])
    return report


def save_message(out_dir: Path, n: int, parts: Sequence[bytes | memoryview]) -> Path:
    """Write message `n` (its parts end to end) as OUT_DIR/NNNNNNNN.msg, atomically: a
    consumer killed mid-write leaves a hidden `.NNNNNNNN.msg.part`, never a cut `.msg`."""
    final = out_dir / f"{n:08d}.msg"
    tmp = out_dir / f".{final.name}.part"
    with tmp.open("wb") as f:
        for part in parts:
            f.write(part)
    os.replace(tmp, final)
    return final


def pull(
    url: str,
    proto: Proto = Proto.NNG,
    *,
    out_dir: Path | None = None,
    delivery: Delivery = Delivery.AT_MOST_ONCE,
    dial_timeout: float = 10.0,
    idle_timeout: float | None = None,
    progress: Progress | None = None,
    progress_interval: float = 1.0,
    check_hdf5: bool = False,
    keyed: bool = False,
    groups: int | None = None,
) -> Report:
    """Receive from `url` until the buffer's end message, saving each message as
    OUT_DIR/NNNNNNNN.msg if asked. Raises StreamBroken when the connection to the buffer
    is lost without an end message (an empty ZMQ frame, the old end marker, also ends).
    With `check_hdf5`, each message's (rank, seq) attributes are checked for gaps.
    `keyed`: `url` is the ZMQ OUT of a buffer with --route-by, joined as one consumer
    group of a job of `groups`."""
    proto = Proto(proto)
    check_url(url, proto)
    if keyed and proto is not Proto.ZMQ:
        raise NngstreamError("--keyed is for a ZMQ OUT (NNG keyed routing: --delivery acked)")
    if keyed and check_hdf5:
        raise NngstreamError("--check hdf5 cannot be combined with --keyed")
    if groups is not None and not keyed:
        raise NngstreamError("--groups needs --keyed")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    if keyed:
        return _pull_keyed_zmq(url, out_dir, dial_timeout, progress, progress_interval, groups)
    if Delivery(delivery) is Delivery.ACKED:
        if proto is not Proto.NNG:
            raise NngstreamError("--delivery acked is NNG only")
        return _pull_acked(url, out_dir, dial_timeout, progress, progress_interval, check_hdf5)
    ctx = zmq.Context() if proto is Proto.ZMQ else None
    kw = {"dial": True, "dial_timeout": dial_timeout, "on_change": lambda: None}
    inlet: NngInlet | ZmqInlet = ZmqInlet(ctx, url, **kw) if ctx else NngInlet(url, **kw)
    report = Report()
    seqs = SequenceCheck() if check_hdf5 else None
    t0 = last_msg = next_progress = time.monotonic()

    def take(item: object, size: int) -> None:
        report.messages += 1
        report.bytes += size
        if out_dir is not None:
            save_message(out_dir, report.messages, (inlet.body(item),))
        if seqs is not None:
            _check(seqs, inlet.body(item), report.messages)
        inlet.discard(item)

    try:
        for got in inlet_messages(inlet, url, lambda: report.messages):
            now = time.monotonic()
            if got is not None:
                take(*got)
                last_msg = now
                if progress is not None and now >= next_progress:
                    report.seconds = now - t0
                    progress(report)
                    next_progress = now + progress_interval
            elif idle_timeout is not None and now - last_msg > idle_timeout:
                raise NngstreamError(f"nothing received from {url} for {idle_timeout:g} s")
    finally:
        inlet.close()
        if ctx is not None:
            ctx.term()
    report.end = inlet.end
    report.sequence = seqs.report() if seqs is not None else None
    report.seconds = time.monotonic() - t0
    return report


def inlet_messages(
    inlet: NngInlet | ZmqInlet,
    url: str,
    received: Callable[[], int],
    stop: threading.Event | None = None,
) -> Iterator[tuple[object, int] | None]:
    """(message, size) from a plain buffer's OUT until its end message (then
    `inlet.end` has it), and None after each wait without a message (a tick for
    progress and timeouts). The caller frees each message (`inlet.discard`). Raises
    StreamBroken, naming `received()` messages, when the connection closes without an
    end message; returns early once `stop` is set. `pull` and the Python client's
    `pull()` both receive through it."""
    while stop is None or not stop.is_set():
        got = inlet.recv()
        if got is not None:
            yield got
            continue
        if inlet.end_marker_seen:
            return
        if inlet.peers_seen and inlet.peers == 0:  # the buffer went away
            while (got := inlet.recv(block=False)) is not None:
                yield got
            if inlet.end_marker_seen:
                return
            raise StreamBroken(
                f"stream broken after {received()} messages: the connection to"
                f" {url} closed without an end message"
            )
        yield None


def _check(seqs: SequenceCheck, payload: memoryview, n: int) -> None:
    try:
        seqs.add(*hdf5_rank_seq(payload))
    except ValueError as exc:
        raise NngstreamError(f"message {n}: {exc} (--check hdf5)") from None


def _receive(
    report: Report,
    messages: Iterable[Sequence[bytes | memoryview]],
    out_dir: Path | None,
    progress: Progress | None,
    progress_interval: float,
    seqs: SequenceCheck | None,
) -> None:
    """Count, check, save and report progress for each message (its parts) of an acked
    or keyed stream, until `messages` ends."""
    t0 = next_progress = time.monotonic()
    for parts in messages:
        report.messages += 1
        report.bytes += sum(len(p) for p in parts)
        if seqs is not None:
            _check(seqs, parts[0], report.messages)
        if out_dir is not None:
            save_message(out_dir, report.messages, parts)
        now = time.monotonic()
        if progress is not None and now >= next_progress:
            report.seconds = now - t0
            progress(report)
            next_progress = now + progress_interval


def _pull_acked(
    url: str,
    out_dir: Path | None,
    dial_timeout: float,
    progress: Progress | None,
    progress_interval: float,
    check_hdf5: bool,
) -> Report:
    """`pull` against a buffer running `--delivery acked`: each message is acknowledged
    once it is saved; duplicates (by producer and sequence) are dropped and counted."""
    from .acked import AckedConsumer

    consumer = AckedConsumer(url, dial_timeout=dial_timeout)
    report = Report()
    seqs = SequenceCheck() if check_hdf5 else None
    t0 = time.monotonic()
    try:
        payloads = ((p,) for _, _, p in consumer.messages(lambda: report.messages))
        _receive(report, payloads, out_dir, progress, progress_interval, seqs)
    finally:
        consumer.close()
    report.end = consumer.end
    report.duplicates = consumer.duplicates
    report.sequence = seqs.report() if seqs is not None else None
    report.seconds = time.monotonic() - t0
    return report


def _pull_keyed_zmq(
    url: str,
    out_dir: Path | None,
    dial_timeout: float,
    progress: Progress | None,
    progress_interval: float,
    groups: int | None,
) -> Report:
    """`pull` as one consumer group of a keyed ZMQ OUT (zmqkeyed.py); a message's parts
    are saved end to end in one file. The info message's count is `Report.expected`."""
    from .zmqkeyed import ZmqKeyedConsumer

    consumer = ZmqKeyedConsumer(url, dial_timeout=dial_timeout, groups=groups)
    report = Report()
    t0 = time.monotonic()
    try:
        _receive(report, consumer.messages(lambda: report.messages), out_dir, progress,
                 progress_interval, None)  # fmt: skip
    finally:
        consumer.close()
    report.end = consumer.end
    report.expected = consumer.info.expected if consumer.info is not None else None
    report.seconds = time.monotonic() - t0
    return report
