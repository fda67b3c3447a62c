"""Keyed routing on ZMQ (`--route-by FIELD --out-proto zmq`): the outlet and a consumer.

The OUT socket is a ZMQ ROUTER, so the buffer knows each consumer and chooses which one
gets a message. The protocol (also in docs/nngstream.md, "Keyed routing on ZMQ"):

- a consumer connects a DEALER socket to OUT and sends a hello: the credit message
  (`Credit`: how many unacknowledged messages it may hold, and `groups`, the consumer
  groups of its job); the consumers that said hello, in the order they did, are the
  groups;
- each data message goes to group `key mod groups` (`keyed.group_for`) with its parts as
  the producer sent them (a NERSC sector: msgpack header, then the raw array), with no
  envelope; the key is read from the first part;
- the consumer acknowledges (`Ack`, n messages) what it processed; a group with no
  credit left holds the keys it owns back (keys never change group while the groups do
  not change);
- at the end each consumer gets its info message (`Info.expected`: data messages it
  was sent) and then the end message, each a one-part message.

A consumer that leaves (its connection closes: the socket monitor says a connection
closed, and the consumer whose connection's socket, known from its hello, is closed or
now has another peer address is the one) hands its keys to the groups left; the messages it
was sent and had not acknowledged are counted in `lost_max` (an upper bound: at-most-once
delivery, nothing is kept to send again).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import zmq

from .errors import NngstreamError, StreamBroken
from .keyed import Unroutable, assembled, group_for, routing_key
from .models import (
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
from .zmqio import HWM, POLL_MS, ZmqInlet, _Peers, _wait_connected, _ZmqSide

log = logging.getLogger("nngstream.zmq")
CHECK_S = 2.0  # after a connection closed, look this long for consumers that left
MAX_CREDIT = 1024  # the most unacknowledged messages a ZMQ consumer may hold
DEFAULT_CREDIT = 64  # what ZmqKeyedConsumer asks for


def _peer_of(fd: int) -> object:
    """The peer address of socket `fd` (a duplicate is asked, never the socket itself);
    None once it is closed. ipc:// peers have no address: there a closed socket is seen,
    a reused one is not (the send to a consumer that left then fails: it leaves)."""
    if fd < 0:
        return "inproc"  # no socket: a consumer that left is seen when a send fails
    try:
        dup = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        return dup.getpeername()
    except OSError:
        return None
    finally:
        dup.close()


@dataclass
class _Group:
    identity: bytes  # the ROUTER's routing id of this consumer's connection
    fd: int  # libzmq's socket for its connection
    peer: object  # that socket's peer address: the connection is gone once it differs
    credit: int
    groups: int  # groups its job has (from its hello)
    sent: int = 0  # data messages handed to its connection
    acked: int = 0
    ended: bool = False  # it was sent its info and end messages


def first_part(item: object) -> memoryview:
    """The first part of a ZMQ message (a Frame, a list of Frames, or a bytearray)."""
    if isinstance(item, list):
        item = item[0]
    return item.buffer if isinstance(item, zmq.Frame) else memoryview(item)  # type: ignore[arg-type]


class ZmqKeyedOutlet(_ZmqSide):
    """Consumers' side with keyed routing over ZMQ (see the module doc). Implements Outlet.

    Only the sending thread uses the socket: incoming hellos and acks are read when a
    message's group has no credit and while the stream ends."""

    def __init__(self, ctx: zmq.Context, url: str, *, route_by: str, **kw) -> None:
        if kw.get("dial"):
            raise NngstreamError("--route-by needs a listening OUT (no --dial-out)")
        self.route_by = route_by
        self.lost = 0  # sent to consumers that left, not acknowledged
        self.unroutable = 0  # messages without a readable key: dropped and counted
        self._consumers: dict[bytes, _Group] = {}  # in hello order
        self._live: list[_Group] = []  # the groups keys go to now
        self._closes = 0  # connections closed (written by the monitor thread)
        self._closes_seen = 0
        self._check_until = 0.0  # look for consumers that left until then
        self._assembled = False
        self._ending = False
        self._on_change_cb = kw["on_change"]
        super().__init__(ctx, zmq.ROUTER, url, what="OUT", on_connection=self._connection, **kw)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # full or gone: an error, not a drop

    # -- Outlet ---------------------------------------------------------------------
    @property
    def lost_max(self) -> int:
        return self.unroutable + self.lost

    def begin_end(self) -> None:
        self._ending = True

    def send(self, item: object) -> bool:
        """Send `item` to its key's group; False if that group had no credit or room
        within POLL_MS (keys keep their group, so a slow group holds the stream back)."""
        try:
            key = routing_key(first_part(item), self.route_by)
        except Unroutable as exc:
            if not self.unroutable:
                log.warning("%s (counted in lost_max; further ones only counted)", exc)
            self.unroutable += 1
            return True
        if self._closes != self._closes_seen or self._check_until:
            self._hear()
        deadline = time.monotonic() + POLL_MS / 1000
        while True:
            c = self._target(key)
            full = False
            if c is not None and c.sent - c.acked < c.credit:
                if self._write(c, item):
                    return True
                full = True  # credit but its queue is full: look again in a millisecond
            now = time.monotonic()
            if now >= deadline:
                return False
            self.sock.poll(1 if full else max(1, int((deadline - now) * 1000)), zmq.POLLIN)
            self._hear()

    def try_send(self, item: object) -> bool:
        return False  # every message goes through its key's group

    def send_control(self, payload: bytes) -> bool:
        """Send each consumer that has not had it its info message, then `payload`; False
        if there was none."""
        self._hear()
        todo = [c for c in self._consumers.values() if not c.ended]
        for c in todo:
            info = Info(route_by=self.route_by, expected=c.sent, groups=len(todo))
            try:
                self.sock.send_multipart([c.identity, encode_control(info)], zmq.NOBLOCK)
                self.sock.send_multipart([c.identity, payload], zmq.NOBLOCK)
            except zmq.Again:
                continue  # its queue is full: again at the next round
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    raise
                self._leave(c)
                continue
            c.ended = True
        return bool(todo)

    @staticmethod
    def new_message(size: int) -> tuple[object, memoryview]:
        data = bytearray(size)
        return data, memoryview(data)

    def finish(
        self, sent: int, linger: float, abort: threading.Event, progress: Callable[[], None]
    ) -> int:
        """Wait until every consumer acknowledged what it was sent or left (what it had
        not acknowledged is then in `lost`), so the info counts and `lost_max` are exact.
        Returns what is still unacknowledged if aborted (e.g. --idle-timeout)."""
        last = -1
        while not abort.is_set():
            self._hear()
            if not any(c.sent - c.acked for c in self._consumers.values()):
                return 0
            acked = sum(c.acked for c in self._consumers.values())
            if acked != last:
                last = acked
                progress()
            self.sock.poll(POLL_MS, zmq.POLLIN)
        return sum(c.sent - c.acked for c in self._consumers.values())

    # -- internals (sending thread) ---------------------------------------------------
    def _target(self, key: int) -> _Group | None:
        """The group of `key`; None until the groups a job announced are all connected
        (keys are spread over the whole job, not over its first ranks to connect)."""
        groups = self._live
        if not groups:
            self._hear()
            return None
        if not self._assembled:
            if not assembled([c.groups for c in groups]):
                self._hear()
                return None
            self._assembled = True
        return group_for(key, groups)

    def _write(self, c: _Group, item: object) -> bool:
        """Hand `item` (one or more parts, not copied) to `c`'s connection; False if it
        is full (or gone: it then leaves)."""
        parts = item if isinstance(item, list) else (item,)
        sock = self.sock
        try:
            sock.send(c.identity, zmq.NOBLOCK | zmq.SNDMORE)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self._leave(c)
            return False
        last = len(parts) - 1
        for i, part in enumerate(parts):
            sock.send(part, zmq.SNDMORE if i < last else 0, copy=False)
        c.sent += 1
        return True

    def _hear(self) -> None:
        """Read hellos and acks waiting on the socket, then note consumers that left
        (in that order: a hello read after its connection's close would make a group
        that is gone; one that is still missed leaves at the first send to it)."""
        sock = self.sock
        while True:
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            if len(parts) != 2:
                continue  # not ours: ignored
            try:
                ctl = decode_consumer_control(parts[1].buffer)
            except ValueError:
                continue
            identity = parts[0].bytes
            c = self._consumers.get(identity)
            if isinstance(ctl, Ack):
                if c is not None:
                    c.acked = min(c.sent, c.acked + ctl.n)
            elif c is None:
                self._join(identity, parts[0].get(zmq.SRCFD), ctl)
        if self._closes != self._closes_seen:
            self._closes_seen = self._closes
            self._check_until = time.monotonic() + CHECK_S
        if self._check_until:
            for c in [c for c in self._consumers.values() if _peer_of(c.fd) != c.peer]:
                self._leave(c)
            if time.monotonic() > self._check_until:
                self._check_until = 0.0

    def _join(self, identity: bytes, fd: int, hello: Credit) -> None:
        if (peer := _peer_of(fd)) is None:
            return  # its connection closed before its hello was read
        c = _Group(identity, fd, peer, min(hello.credit, MAX_CREDIT), hello.groups or 1)
        self._consumers[identity] = c
        self._live = [g for g in self._consumers.values() if not g.ended]
        log.info("consumer group %d joined (its job has %d)", len(self._live), c.groups)

    def _leave(self, c: _Group) -> None:
        if self._consumers.pop(c.identity, None) is None:
            return
        unacked = c.sent - c.acked
        self.lost += unacked
        self._live = [g for g in self._consumers.values() if not g.ended]
        if not self._consumers:
            self._assembled = False  # the next job's groups are waited for again
        if unacked and not self._ending:
            log.warning(
                "a consumer group left with %d message(s) not acknowledged (counted in"
                " lost_max); its keys go to the %d group(s) left",
                unacked,
                len(self._live),
            )
        self._on_change_cb()

    def _connection(self, fd: int, up: bool) -> None:
        """(monitor thread) A connection closed: `_hear` looks for the consumers whose
        connection is gone (the event names a file descriptor, which libzmq may already
        have given to a new connection: the peer address tells them apart)."""
        if not up:
            self._closes += 1


class ZmqKeyedInlet(_ZmqSide):
    """A buffer's IN dialing a keyed ZMQ OUT as one of its consumer groups (`--dial-in
    --in-proto zmq --in-delivery acked`: a chain, aggregator -> per-site buffers). It
    says hello with its credit and acknowledges what it took into its own buffer.
    Implements Inlet (a multipart message is held as the list of its frames)."""

    body = staticmethod(ZmqInlet.body)
    stamp = staticmethod(ZmqInlet.stamp)
    restamp = staticmethod(ZmqInlet.restamp)

    def __init__(self, ctx: zmq.Context, url: str, **kw) -> None:
        super().__init__(ctx, zmq.DEALER, url, what="IN", **kw)
        self.end_marker_seen = False
        self.end: EndOfStream | None = None
        self._pending = 0  # messages taken and not yet acknowledged
        self.sock.send(encode_control(Credit(credit=DEFAULT_CREDIT)))

    def recv(self, block: bool = True) -> tuple[object, int] | None:
        """One message and its size, or None after POLL_MS (at once if not `block`). The
        info message is dropped, the end message noted: neither is returned."""
        sock = self.sock
        while True:
            if self._pending >= DEFAULT_CREDIT // 2:
                self._ack()
            try:
                if self._pending and block:  # acknowledge before waiting
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        self._ack()
                        frames = sock.recv_multipart(copy=False)
                else:
                    frames = sock.recv_multipart(0 if block else zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self._ack()
                return None
            if len(frames) == 1 and is_control(frames[0].buffer):
                if decode_info(frames[0].buffer) is not None:
                    continue
                try:
                    self.end = decode_control(frames[0].buffer)
                except ValueError:
                    continue
                self.end_marker_seen = True
                return None
            self._pending += 1
            if len(frames) == 1:
                return frames[0], len(frames[0])
            return frames, sum(len(f) for f in frames)

    def _ack(self) -> None:
        if self._pending:
            with contextlib.suppress(zmq.ZMQError):  # the upstream left: it counts the loss
                self.sock.send(encode_control(Ack(n=self._pending)), zmq.NOBLOCK)
            self._pending = 0

    def disconnect_all(self) -> None:
        """Take nothing more from the upstream buffer (what it sent since is its loss)."""
        self.stop_accepting()


class ZmqKeyedConsumer:
    """One consumer group of a keyed ZMQ stream: yields each message's parts (memoryviews,
    valid until the next is requested). A message counts as processed once the next one
    is requested; processed messages are acknowledged together when none is waiting or
    half the credit is used. `info` and `end` are the buffer's info and end messages; a
    lost connection without the end message raises StreamBroken."""

    def __init__(
        self,
        url: str,
        *,
        credit: int = DEFAULT_CREDIT,
        groups: int | None = None,
        dial_timeout: float = 10.0,
        ctx: zmq.Context | None = None,
    ) -> None:
        """`groups`: the consumer groups of this job (MPI ranks); the buffer waits for
        all of them before routing keys."""
        self.url = url
        self._pending = 0
        self.info: Info | None = None
        self.end: EndOfStream | None = None
        self._own_ctx = ctx is None
        self._ctx = ctx or zmq.Context()
        self.sock = self._ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.setsockopt(zmq.RCVHWM, max(HWM, credit))
        self._peers = _Peers(self.sock, lambda: None)
        try:
            self.sock.connect(url)
            _wait_connected(self._peers, url, dial_timeout, "OUT")
        except (zmq.ZMQError, NngstreamError) as exc:
            self.close()
            if isinstance(exc, NngstreamError):
                raise NngstreamError(
                    f"{exc} (a keyed consumer needs the OUT of `nngstream --route-by FIELD"
                    " --out-proto zmq`: a ZMQ ROUTER)"
                ) from None
            raise NngstreamError(f"cannot dial OUT address {url}: {exc}") from None
        self.sock.send(encode_control(Credit(credit=credit, groups=groups)))
        self._ack_every = max(1, credit // 2)

    def ack(self) -> None:
        if self._pending:
            self.sock.send(encode_control(Ack(n=self._pending)))
            self._pending = 0

    def messages(self, received: Callable[[], int]) -> Iterator[Sequence[memoryview]]:
        """The stream's messages as lists of parts; `received()` gives the count for the
        broken-stream line."""
        sock = self.sock
        while True:
            if self._pending >= self._ack_every:
                self.ack()
            if not sock.poll(0, zmq.POLLIN):
                self.ack()  # nothing waiting: acknowledge what was processed, then wait
                while not sock.poll(POLL_MS, zmq.POLLIN):
                    if self._peers.seen and self._peers.count <= 0:
                        raise StreamBroken(
                            f"stream broken after {received()} messages: the connection to"
                            f" {self.url} closed without an end message"
                        )
            frames = sock.recv_multipart(copy=False)
            parts = [f.buffer for f in frames]
            if len(parts) == 1 and is_control(parts[0]):
                if (info := decode_info(parts[0])) is not None:
                    self.info = info
                    continue
                try:
                    self.end = decode_control(parts[0])
                except ValueError:
                    continue  # a control message this version does not know
                return
            self._pending += 1
            yield parts

    def close(self) -> None:
        if not self.sock.closed:
            if self.end is None and self._pending:
                with contextlib.suppress(zmq.ZMQError):
                    self.ack()
            self.sock.disable_monitor()
            self.sock.close()
            self._peers.join()
        if self._own_ctx:
            self._ctx.term()
