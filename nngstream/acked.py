"""Acknowledged delivery (`--delivery acked`) over NNG: the outlet and a consumer.

The OUT socket is an NNG Pair1 socket in polyamorous mode, so the buffer knows which
consumer each message goes to and hears back from each. The protocol (also in
docs/nngstream.md, "Acknowledged delivery"):

- a consumer dials OUT with a Pair1 socket and sends a credit message
  (`Credit`: how many unacknowledged messages it may hold; the buffer grants at most
  `MAX_CREDIT`). Pair1 keeps `PIPE_QUEUE` messages per connection and drops beyond
  that, so the buffer also never has more than that many messages not yet written to a
  consumer's connection (it compares what it sent with NNG's per-pipe `tx_msgs`
  statistic, read only when a connection looks full);
- the buffer sends each data message to one consumer with credit, with a 16-byte
  envelope in front of the payload: producer and sequence (`ENVELOPE`, little-endian
  u64s; the sequence counts that producer connection's messages from 0);
- the consumer acknowledges (`Ack`, n messages, in the order received) once it has
  processed them; the buffer then forgets them;
- messages a consumer took and did not acknowledge before its connection closed go
  back to the queue, ahead of the rest, for the other consumers (counted as
  `redelivered`); consumers drop duplicates by (producer, sequence);
- the stream ends with the end message (no envelope) once every message is
  acknowledged.

Redelivered messages may overtake later ones of the same producer: per-producer order
holds only without faults. Pair1's polyamorous mode is deprecated upstream (kept in
NNG 1.x, which pynng bundles).
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pynng
from pynng._nng import ffi, lib

from .errors import NngstreamError, StreamBroken
from .keyed import Unroutable, assembled, group_for, routing_key
from .models import (
    ENVELOPE,
    Ack,
    Credit,
    EndOfStream,
    Info,
    decode_consumer_control,
    decode_control,
    decode_info,
    encode_control,
    is_control,
)
from .nngio import (
    POLL_MS,
    STAMP_SIZE,
    _attach_or_close,
    _nng_error,
    _pipe_tx,
    body,
    new_message,
    owned_body,
)
from .routing import RoundRobin

MAX_CREDIT = 256  # the most unacknowledged messages a consumer may hold
DEFAULT_CREDIT = 16  # what AckedConsumer asks for
PIPE_QUEUE = 2  # NNG Pair1 (polyamorous): messages queued per connection before it drops
REFRESH_S = 0.0005  # how long to wait before reading the statistics again
log = logging.getLogger("nngstream")


_STAMP = struct.Struct(">QQ")  # the inlet's stamp in the NNG header (nng_msg_header_append_u64)


def _stamped(msg: object) -> tuple[int, int]:
    """(producer connection id, sequence) of a message stamped by the inlet (kept in the
    NNG header, so it survives the spill)."""
    if lib.nng_msg_header_len(msg) != STAMP_SIZE:
        raise NngstreamError("acked delivery needs messages received on an NNG IN")
    return _STAMP.unpack(ffi.buffer(lib.nng_msg_header(msg), STAMP_SIZE))


@dataclass
class _Consumer:
    pipe_id: int
    credit: int = 0
    unacked: deque[object] = field(default_factory=deque)  # kept messages (None: not kept)
    ended: bool = False
    acked: int = 0  # messages this consumer acknowledged (keyed routing's info message)
    groups: int = 1  # keyed routing: groups its job has (from its credit message)
    sent: int = 0  # messages (data and control) handed to its connection
    written: int = 0  # of those, written out by NNG (tx_msgs, read when needed)


class AckedNngOutlet:
    """Consumers' side with acknowledgements (see the module doc). Implements Outlet."""

    def __init__(
        self,
        url: str,
        *,
        dial: bool,
        dial_timeout: float,
        on_change: Callable[[], None],
        route_by: str | None = None,
        keep: bool = True,
    ) -> None:
        """`keep`: hold each message until it is acknowledged and redeliver it if its
        consumer leaves first (`--delivery acked`); without, a message is freed once sent
        and what a consumer that left had not acknowledged is counted in `lost_max`
        (keyed routing at at-most-once delivery)."""
        if dial:
            raise NngstreamError("--delivery acked cannot be combined with --dial-out")
        self.route_by = route_by  # keyed routing: the header field that picks the group
        self.keep = keep
        self.lost = 0  # keep=False: messages unacknowledged by consumers that left
        self.unroutable = 0  # keyed messages without a readable key: freed and counted
        self.sock = pynng.Pair1(polyamorous=True, recv_timeout=POLL_MS, recv_max_size=0)
        self._raw = self.sock.socket
        self._new_p = ffi.new("nng_msg **")  # `_enveloped_copy`'s (under cond)
        self._cond = threading.Condition(threading.Lock())
        self._consumers: dict[int, _Consumer] = {}
        self._gone: set[int] = set()  # pipes that have left (ids are never reused)
        self._again: deque[object] = deque()  # taken back from consumers that left
        self._policy = RoundRobin()
        self._full = False  # a consumer had credit but its connection's queue looked full
        self._refreshed = 0.0  # when NNG's statistics were last read
        self._assembled = False  # keyed routing: a job's announced groups were all connected
        self._on_change = on_change
        self.redelivered = 0
        self.acked = 0
        self._closed = False
        self.sock.add_post_pipe_connect_cb(self._joined)
        self.sock.add_post_pipe_remove_cb(self._left)
        self.url = _attach_or_close(self.sock, url, dial, dial_timeout, "OUT")
        self._sock_id = lib.nng_socket_id(self._raw)
        self._rx = threading.Thread(target=self._hear, name="acks", daemon=True)
        self._rx.start()

    # -- Outlet ---------------------------------------------------------------------
    @property
    def peers(self) -> int:
        return len(self._consumers)

    @property
    def lost_max(self) -> int:
        # with `keep`, nothing handed out is forgotten before it is acknowledged; keyed
        # messages without a key never reach a consumer and are counted here
        return self.unroutable + self.lost

    def begin_end(self) -> None:
        pass

    def send(self, item: object) -> bool:
        """Take `item` and send it (or an older message taken back) to a consumer with
        credit; False if none had credit within POLL_MS."""
        if self.route_by is not None:
            return self._send_keyed(item)
        with self._cond:
            c = self._wait_for(self._pick)
            if c is None:
                return False
            if self._again:
                self._again.append(item)
                item = self._again.popleft()
            msg = self._prepare(c, item)
        # written outside the lock, so acknowledgements are taken meanwhile; this thread
        # is the only one sending, and what a consumer that leaves now took is kept
        self._transmit(c.pipe_id, msg)
        return True

    def try_send(self, item: object) -> bool:
        """Cut-through: send `item` only if a consumer has credit and room now and nothing
        taken back waits. The pump calls this only while its sending thread is idle, so
        one thread sends at a time (each consumer must receive in the order `unacked`
        holds). Keyed routing never cuts through (a key waits for its own group)."""
        if self.route_by is not None:
            return False
        with self._cond:
            if self._again or (c := self._pick()) is None:
                return False
            msg = self._prepare(c, item)
        self._transmit(c.pipe_id, msg)
        return True

    def send_control(self, payload: bytes) -> bool:
        """Send `payload` to every consumer that has not had it; False if none. In keyed
        mode each consumer first gets its info message (messages it acknowledged)."""
        with self._cond:
            todo = [c for c in self._consumers.values() if not c.ended]
            for c in todo:
                c.ended = True
                if self.route_by is not None:
                    info = Info(route_by=self.route_by, expected=c.acked, groups=len(todo))
                    self._send_to(c.pipe_id, *_copy(encode_control(info)))
                self._send_to(c.pipe_id, *_copy(payload))
        return bool(todo)

    # -- keyed routing ----------------------------------------------------------------
    def _send_keyed(self, item: object) -> bool:
        """Send `item` to the group its key maps to (waiting up to POLL_MS for that group's
        credit: keys keep their group, so a slow group holds the stream back). Messages
        taken back from a group that left go first, each to its key's new group."""
        try:
            key = routing_key(body(item), self.route_by or "")
        except Unroutable as exc:
            if not self.unroutable:
                log.warning("%s (counted in lost_max; further ones only counted)", exc)
            self.unroutable += 1
            lib.nng_msg_free(item)
            return True
        with self._cond:
            self._redeliver_keyed()
            if self._again:
                self._pause(time.monotonic() + POLL_MS / 1000)
                return False
            c = self._wait_for(lambda: self._keyed_target(key))
            if c is None:
                return False
            self._deliver(c, item)
        return True

    def _wait_for(self, choose: Callable[[], _Consumer | None]) -> _Consumer | None:
        """(under cond) `choose()` once it gives a consumer, waiting up to POLL_MS for
        credit (acks wake us) or for a full connection to write (see `_ready`)."""
        deadline = time.monotonic() + POLL_MS / 1000
        while (c := choose()) is None:
            if not self._pause(deadline):
                return None
        return c

    def _pause(self, deadline: float) -> bool:
        """(under cond) Wait for an ack, or REFRESH_S if a connection looked full; False
        once `deadline` has passed."""
        now = time.monotonic()
        if now >= deadline:
            return False
        full, self._full = self._full, False  # `_ready` sets it again if still so
        self._cond.wait(min(REFRESH_S, deadline - now) if full else deadline - now)
        return True

    def _groups(self) -> list[_Consumer]:
        return [self._consumers[p] for p in sorted(self._consumers) if not self._consumers[p].ended]

    def _keyed_target(self, key: int) -> _Consumer | None:
        """(under cond) The group of `key` if it has credit now, else None. Until the
        groups a consumer job announced (`Credit.groups`) are all connected, None: keys
        are spread over the whole job, not over its first ranks to connect."""
        groups = self._groups()
        if not groups:
            return None
        if not self._assembled:
            if not assembled([c.groups for c in groups]) or any(not c.credit for c in groups):
                return None
            self._assembled = True
        c = group_for(key, groups)
        return c if self._ready(c) else None

    def _redeliver_keyed(self) -> None:
        """(under cond) Send taken-back messages, in order, while their groups have credit."""
        while self._again:
            item = self._again[0]
            c = self._keyed_target(routing_key(body(item), self.route_by or ""))
            if c is None:
                return
            self._deliver(c, self._again.popleft())

    @staticmethod
    def new_message(size: int) -> tuple[object, memoryview]:
        return new_message(size)

    @staticmethod
    def discard(item: object) -> None:
        lib.nng_msg_free(item)

    def finish(
        self, sent: int, linger: float, abort: threading.Event, progress: Callable[[], None]
    ) -> int:
        """Wait until every message is acknowledged (redelivering what consumers that
        left had taken). Returns the messages still unacknowledged if aborted."""
        while not abort.is_set():
            with self._cond:
                if self.route_by is not None:
                    self._redeliver_keyed()
                while self.route_by is None and self._again and (c := self._pick()) is not None:
                    self._deliver(c, self._again.popleft())
                pending = len(self._again) + sum(len(c.unacked) for c in self._consumers.values())
                if not pending:
                    return 0
                before = self.acked
                self._pause(time.monotonic() + POLL_MS / 1000)
                if self.acked != before:
                    progress()
        with self._cond:
            return len(self._again) + sum(len(c.unacked) for c in self._consumers.values())

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        self._rx.join(2.0)
        with self._cond:
            for item in self._again:
                lib.nng_msg_free(item)
            self._again.clear()
            for c in self._consumers.values():
                for item in c.unacked:
                    if item is not None:
                        lib.nng_msg_free(item)
            self._consumers.clear()

    # -- internals (under self._cond unless said otherwise) ---------------------------
    def _pick(self) -> _Consumer | None:
        ready = [c for c in self._consumers.values() if self._ready(c) and not c.ended]
        return self._policy.choose(ready) if ready else None

    def _ready(self, c: _Consumer) -> bool:
        """(under cond) Credit left, and room in its connection's queue (see the module
        doc; NNG's statistics are read again when it looks full, at most every REFRESH_S)."""
        if len(c.unacked) >= c.credit:
            return False
        if c.sent - c.written < PIPE_QUEUE:
            return True
        now = time.monotonic()
        if now - self._refreshed >= REFRESH_S:
            self._refreshed = now
            tx = _pipe_tx(self._sock_id)
            for other in self._consumers.values():
                other.written = max(other.written, tx.get(other.pipe_id, other.written))
            if c.sent - c.written < PIPE_QUEUE:
                return True
        self._full = True
        return False

    def _deliver(self, c: _Consumer, item: object) -> None:
        self._transmit(c.pipe_id, self._prepare(c, item))

    def _prepare(self, c: _Consumer, item: object) -> object:
        """(under cond) The message to send `item` to `c`: `item` behind its envelope.
        With `keep`, the message sent is a new one (envelope, then a copy of the payload,
        made by NNG in C with the GIL released) and `item` itself (stamp included) is kept
        until acknowledged, to send again if `c` leaves first: NNG frees a message once it
        is written, so a kept message cannot be the one sent. One copy either way; copying
        `item` and putting the envelope in front of it instead costs a second copy when
        NNG left no room in front (it leaves none for payloads of a power of two >= 1 KiB).
        Without `keep`, the envelope goes in front of `item` itself."""
        producer, seq = _stamped(item)
        envelope = ENVELOPE.pack(producer, seq)
        if self.keep:
            msg = self._enveloped_copy(item, envelope)
            c.unacked.append(item)
        else:
            if lib.nng_msg_insert(item, envelope, len(envelope)):
                raise MemoryError("cannot grow an NNG message by its envelope")
            lib.nng_msg_header_clear(item)  # the stamp travels in the envelope
            msg = item
            c.unacked.append(None)
        c.sent += 1
        return msg

    def _enveloped_copy(self, item: object, envelope: bytes) -> object:
        """(under cond) A new message: `envelope`, then `item`'s payload."""
        size = lib.nng_msg_len(item)
        if lib.nng_msg_alloc(self._new_p, 0):
            raise MemoryError("cannot allocate an NNG message")
        msg = self._new_p[0]
        if (
            lib.nng_msg_reserve(msg, len(envelope) + size)
            or lib.nng_msg_append(msg, envelope, len(envelope))
            or lib.nng_msg_append(msg, lib.nng_msg_body(item), size)
        ):
            lib.nng_msg_free(msg)
            raise MemoryError("cannot copy an NNG message to send it")
        return msg

    def _send_to(self, pipe_id: int, msg: object, _size: int) -> None:
        """(under cond) Send a control message to one consumer."""
        if (c := self._consumers.get(pipe_id)) is not None:
            c.sent += 1
        self._transmit(pipe_id, msg)

    def _transmit(self, pipe_id: int, msg: object) -> None:
        lib.nng_msg_set_pipe(msg, ffi.new("nng_pipe *", {"id": pipe_id})[0])
        rc = lib.nng_sendmsg(self._raw, msg, 0)
        if rc:
            lib.nng_msg_free(msg)
            if rc != lib.NNG_ECLOSED:
                raise NngstreamError(f"sending on OUT failed: {_nng_error(rc)}")

    def _joined(self, pipe: pynng.Pipe) -> None:
        with self._cond:
            if pipe.id not in self._gone:
                self._consumers.setdefault(pipe.id, _Consumer(pipe.id))
        self._on_change()

    def _left(self, pipe: pynng.Pipe) -> None:
        with self._cond:
            self._gone.add(pipe.id)
            c = self._consumers.pop(pipe.id, None)
            if not self._consumers:
                self._assembled = False  # the next job's groups are waited for again
            if c is not None and c.unacked and not self.keep:
                self.lost += len(c.unacked)  # sent and freed: it may have processed some
            elif c is not None and c.unacked:
                self.redelivered += len(c.unacked)
                self._again.extendleft(reversed(c.unacked))
            self._cond.notify_all()
        self._on_change()

    def _hear(self) -> None:
        """(own thread) Credit and acknowledgements from consumers."""
        msg_p = ffi.new("nng_msg **")
        while not self._closed:
            rc = lib.nng_recvmsg(self._raw, msg_p, 0)
            if rc in (lib.NNG_ETIMEDOUT, lib.NNG_EAGAIN):
                continue
            if rc:
                return  # closed
            msg = msg_p[0]
            pipe_id = lib.nng_pipe_id(lib.nng_msg_get_pipe(msg))
            data = ffi.buffer(lib.nng_msg_body(msg), lib.nng_msg_len(msg))[:]
            lib.nng_msg_free(msg)
            try:
                ctl = decode_consumer_control(data)
            except ValueError:
                continue  # not ours: ignored
            done: list[object] = []  # kept copies acknowledged now
            with self._cond:
                c = self._consumers.get(pipe_id)
                if c is None:  # its connect callback has not run yet (it can lag)
                    if pipe_id in self._gone:
                        continue
                    c = self._consumers[pipe_id] = _Consumer(pipe_id)
                if isinstance(ctl, Credit):
                    c.credit = min(ctl.credit, MAX_CREDIT)
                    c.groups = ctl.groups or 1
                else:
                    n = min(ctl.n, len(c.unacked))
                    done = [c.unacked.popleft() for _ in range(n)]
                    self.acked += n
                    c.acked += n
                self._cond.notify_all()
            for item in done:  # freed outside the lock
                if item is not None:
                    lib.nng_msg_free(item)


def _copy(payload: bytes) -> tuple[object, int]:
    msg, view = new_message(len(payload))
    view[:] = payload
    del view
    return msg, len(payload)


def _take(msg: pynng.Message) -> memoryview:
    """The payload of a message pynng received, without a copy: the view takes the
    nng_msg over from pynng's `Message` (which then does not free it; see `owned_body`)."""
    with msg._mem_freed_lock:  # noqa: SLF001 (pynng's own guard against a double free)
        msg._mem_freed = True  # noqa: SLF001
    return owned_body(msg._nng_msg)  # noqa: SLF001


class AckedConsumer:
    """A consumer of an acked stream: yields (producer, sequence, payload) once per
    (producer, sequence). The payload is a view of the received message's memory, not a
    copy; the message's memory is freed when the last view of it is dropped (keeping
    views keeps their messages in memory). A message counts as processed once the next
    one is requested (or, with `manual_ack`, once the caller `release`s it); processed
    messages are acknowledged together when no message is waiting or half the credit is
    used (or at `ack()`). `end` is the end message once the stream ended; a lost
    connection without it raises StreamBroken."""

    def __init__(
        self,
        url: str,
        *,
        credit: int = DEFAULT_CREDIT,
        dial_timeout: float = 10.0,
        groups: int | None = None,
        manual_ack: bool = False,
        on_idle: Callable[[], None] | None = None,
    ):
        """`groups`: keyed routing, the consumer groups of this job (MPI ranks); the buffer
        waits for all of them before routing keys. `manual_ack`: a yielded message is
        acknowledged only once the caller `release`s it (in the order yielded: the
        protocol acknowledges in receive order; duplicates dropped here go with the
        message yielded next). `on_idle`: called when nothing arrived for POLL_MS, so a
        caller holding messages can settle them (a buffer sends nothing beyond the credit
        and ends the stream only once everything is acknowledged)."""
        self.url = url
        self.sock = pynng.Pair1(recv_timeout=POLL_MS, recv_max_size=0)
        self._live = 0
        self._seen_peer = False
        self.sock.add_post_pipe_connect_cb(self._added)
        self.sock.add_post_pipe_remove_cb(self._removed)
        _attach_or_close(self.sock, url, True, dial_timeout, "OUT")
        self.sock.send(encode_control(Credit(credit=credit, groups=groups)))
        self._ack_every = max(1, credit // 2)
        self.end: EndOfStream | None = None
        self.info: Info | None = None  # keyed routing: this group's expected count
        self.duplicates = 0
        self._seen: set[tuple[int, int]] = set()
        self._pending = 0  # processed, not yet acknowledged
        self._manual = manual_ack
        self._on_idle = on_idle
        self._held: deque[int] = deque()  # manual: per yielded message, the messages it frees
        self._held_n = 0  # manual: sum of _held
        self._dropped = 0  # manual: duplicates received since the last yielded message

    def _added(self, pipe: pynng.Pipe) -> None:
        self._live += 1
        self._seen_peer = True

    def _removed(self, pipe: pynng.Pipe) -> None:
        self._live -= 1

    @property
    def outstanding(self) -> int:
        """Messages received and not yet acknowledged (what counts against the credit)."""
        return self._pending + self._held_n + self._dropped

    def release(self, n: int = 1) -> None:
        """(manual_ack) The `n` oldest yielded messages not yet released are processed."""
        for _ in range(n):
            k = self._held.popleft()
            self._pending += k
            self._held_n -= k
        if not self._held:
            self._pending += self._dropped
            self._dropped = 0

    def ack(self) -> None:
        if self._pending:
            self.sock.send(encode_control(Ack(n=self._pending)))
            self._pending = 0

    def messages(self, received: Callable[[], int]) -> Iterator[tuple[int, int, memoryview]]:
        """The stream's messages; `received()` gives the count for the broken-stream line."""
        while True:
            if self._pending >= self._ack_every:
                self.ack()
            try:
                msg = self.sock.recv_msg(block=False)
            except pynng.TryAgain:
                self.ack()  # nothing waiting: acknowledge what was processed, then wait
                msg = None
            try:
                msg = msg or self.sock.recv_msg()
            except pynng.Timeout:
                if self._on_idle is not None:
                    self._on_idle()
                    self.ack()
                if self._seen_peer and self._live <= 0:
                    raise StreamBroken(
                        f"stream broken after {received()} messages: the connection to"
                        f" {self.url} closed without an end message"
                    ) from None
                continue
            data = _take(msg)
            if is_control(data):
                if (info := decode_info(data)) is not None:
                    self.info = info
                    continue
                try:
                    self.end = decode_control(data)
                except ValueError:
                    continue  # a control message this version does not know
                return
            producer, seq = ENVELOPE.unpack_from(data)
            if (producer, seq) in self._seen:
                self.duplicates += 1
                if not self._manual:
                    self._pending += 1
                elif self._held:
                    self._dropped += 1
                else:
                    self._pending += 1  # nothing held before it: processed
                continue
            self._seen.add((producer, seq))
            if self._manual:
                self._held.append(1 + self._dropped)
                self._held_n += 1 + self._dropped
                self._dropped = 0
            else:
                self._pending += 1
            yield producer, seq, data[ENVELOPE.size :]

    def close(self) -> None:
        self.ack()
        self.sock.close()
