"""ZMQ sides of the buffer: PULL inlet and PUSH outlet (zmqkeyed.py: the keyed ROUTER outlet).

Frames received with copy=False are sent on with copy=False: libzmq shares the
payload by reference count, so forwarding never copies it. A multipart message is held
as the list of its frames and sent on as one multipart message. Connected peers are counted
from the socket monitor (a connection counts once its ZMTP handshake succeeded).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import zmq
from zmq.backend import Socket as _RawSocket
from zmq.utils.monitor import recv_monitor_message

from .errors import NngstreamError
from .models import CONTROL_MAX, EndOfStream, decode_control, is_control
from .sides import asked_port_zero, with_port

log = logging.getLogger("nngstream.zmq")
POLL_MS = 100
# Per-connection queues of libzmq, in messages. Kept small so that the buffer's own
# FIFO, bounded in bytes, holds the data rather than libzmq's unbounded-in-bytes queues.
HWM = 16
# pyzmq's compiled send/recv, called without its Python layer (copy thresholds, routing
# ids and groups: unused here), which costs more than the call itself per 64 KiB frame
raw_send = _RawSocket.send
raw_recv = _RawSocket.recv
NOBLOCK = int(zmq.NOBLOCK)  # a plain int (zmq.NOBLOCK is an enum Flag)
_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
)


class _Peers:
    """Live connection count of one socket, kept by a thread reading its monitor."""

    def __init__(
        self,
        sock: zmq.Socket,
        on_change: Callable[[], None],
        on_connection: Callable[[int, bool], None] | None = None,
    ) -> None:
        self._on_connection = on_connection  # (fd, True at accept/connect, False at close)
        self._mon = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED
            | zmq.EVENT_ACCEPTED
            | zmq.EVENT_CONNECTED
            | zmq.EVENT_DISCONNECTED
            | zmq.EVENT_MONITOR_STOPPED
            | _FAILED[0]
            | _FAILED[1]
            | _FAILED[2]
        )
        self._on_change = on_change
        self.count = 0
        self.seen = False
        self.joined = 0  # handshakes ever completed
        self.left = 0  # connections that ended after a successful handshake
        self._thread = threading.Thread(target=self._run, name="zmq-monitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # A failed handshake is followed by a DISCONNECTED for the same connection:
        # count it back so that port probes do not look like peers leaving.
        try:
            while True:
                got = recv_monitor_message(self._mon)
                event = got["event"]
                if event == zmq.EVENT_MONITOR_STOPPED:
                    break
                if event in (zmq.EVENT_ACCEPTED, zmq.EVENT_CONNECTED):
                    if self._on_connection is not None:
                        self._on_connection(got["value"], True)
                    continue
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self.count += 1
                    self.seen = True
                    self.joined += 1
                elif event in _FAILED:
                    self.count += 1
                elif event == zmq.EVENT_DISCONNECTED:
                    self.count -= 1
                    self.left += 1
                    if self._on_connection is not None:
                        self._on_connection(got["value"], False)
                log.debug("monitor: event %d, %d connected", event, self.count)
                self._on_change()
        except zmq.ZMQError:
            pass
        finally:
            self._mon.close(linger=0)

    def join(self, timeout: float = 2.0) -> None:
        self._thread.join(timeout)


def _attach(sock: zmq.Socket, url: str, dial: bool, what: str) -> str:
    """Bind or connect; the address in use (the port chosen for a tcp port 0)."""
    try:
        if dial:
            sock.connect(url)
            return url
        sock.bind(url)
    except zmq.ZMQError as exc:
        verb = "dial" if dial else "listen on"
        raise NngstreamError(f"cannot {verb} {what} address {url}: {exc}") from None
    if asked_port_zero(url):
        return with_port(url, int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1]))
    return url


def _wait_connected(peers: _Peers, url: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while peers.count <= 0:
        if time.monotonic() >= deadline:
            raise NngstreamError(
                f"cannot dial {what} address {url}: no ZMQ peer answered in {timeout:g} s"
            )
        time.sleep(0.02)


class _ZmqSide:
    def __init__(
        self,
        ctx: zmq.Context,
        kind: int,
        url: str,
        *,
        dial: bool,
        dial_timeout: float,
        on_change: Callable[[], None],
        what: str,
        on_connection: Callable[[int, bool], None] | None = None,
    ) -> None:
        self.url = url
        self.dial = dial
        self.sock = ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, POLL_MS)
        self.sock.setsockopt(zmq.SNDTIMEO, POLL_MS)
        self.sock.setsockopt(zmq.RCVHWM, HWM)
        self.sock.setsockopt(zmq.SNDHWM, HWM)
        self._peers = _Peers(self.sock, on_change, on_connection)
        try:
            self.url = _attach(self.sock, url, dial, what)
            if dial:
                _wait_connected(self._peers, url, dial_timeout, what)
        except NngstreamError:
            self.close()
            raise
        self._bound = not dial

    @property
    def peers(self) -> int:
        return max(self._peers.count, 0)

    @property
    def peers_seen(self) -> bool:
        return self._peers.seen

    @property
    def peers_joined(self) -> int:
        return self._peers.joined

    def stop_accepting(self) -> None:
        """No new connections (call from the thread that uses the socket). libzmq also
        ends the connections it accepted there; frames they already delivered stay
        readable, but frames queued towards them are dropped: inlets only."""
        if self._bound:
            self._bound = False
            with contextlib.suppress(zmq.ZMQError):
                self.sock.unbind(self.url)

    @staticmethod
    def discard(item: object) -> None:
        """Frames are freed by Python's reference counting."""

    def close(self, linger_ms: int = 0) -> None:
        if self.sock.closed:
            return
        with contextlib.suppress(zmq.ZMQError):
            self.sock.disable_monitor()
        self.sock.close(linger=linger_ms)
        self._peers.join()


class ZmqInlet(_ZmqSide):
    """Producers' side: a ZMQ PULL socket."""

    def __init__(self, ctx: zmq.Context, url: str, **kw) -> None:
        super().__init__(ctx, zmq.PULL, url, what="IN", **kw)
        self.end_marker_seen = False
        self.end: EndOfStream | None = None  # the end message received, if any

    def recv(self, block: bool = True) -> tuple[object, int] | None:
        """One frame and its size, or None after POLL_MS (at once if not `block`). An
        empty frame or an end message (from an upstream buffer) is noted, never returned."""
        try:
            frame = raw_recv(self.sock, 0 if block else NOBLOCK, False)
        except zmq.Again:
            return None
        return self.take(frame)

    def take(self, frame: zmq.Frame) -> tuple[object, int] | None:
        """The message that begins with `frame` (just received) and its size; None for an
        end marker (noted)."""
        if frame.more:  # a multipart message: its parts stay together, end to end
            parts = [frame]
            while parts[-1].more:
                parts.append(self.sock.recv(copy=False))
            return parts, sum(len(p) for p in parts)
        size = len(frame)
        if size and (size >= CONTROL_MAX or frame.buffer[0] != 0 or not is_control(frame.buffer)):
            return frame, size
        if size:
            try:
                self.end = decode_control(frame.buffer)
            except ValueError:
                return frame, size  # starts like a control message but is data
        self.end_marker_seen = True
        return None

    @staticmethod
    def body(item: object) -> memoryview:
        """The message's bytes; a multipart message's parts joined (a copy: used only by
        the spill, a bridge to NNG and `pull --out`, which keep one part per message)."""
        if isinstance(item, list):
            return memoryview(b"".join(p.buffer for p in item))
        return item.buffer  # type: ignore[attr-defined]

    @staticmethod
    def stamp(item: object) -> bytes:
        return b""  # ZMQ messages are never stamped (acked delivery is NNG only)

    @staticmethod
    def restamp(item: object, stamp: bytes) -> None:
        pass

    def disconnect_all(self) -> None:
        """Refuse new producers (libzmq cannot drop live connections short of closing)."""
        self.stop_accepting()


class ZmqOutlet(_ZmqSide):
    """Consumers' side: a ZMQ PUSH socket (round-robin over connections with room)."""

    def __init__(self, ctx: zmq.Context, url: str, **kw) -> None:
        self.handed = 0  # messages handed to libzmq (by the one thread using the socket)
        self._since: dict[int, int] = {}  # connection fd -> `handed` when it connected
        self._vanished = 0
        self._ending = False
        super().__init__(ctx, zmq.PUSH, url, what="OUT", on_connection=self._connection, **kw)

    def _connection(self, fd: int, up: bool) -> None:
        """(monitor thread) A consumer connection that closes before the end of the stream
        may have lost anything sent while it was connected: libzmq does not say which
        connection took which message."""
        if up:
            self._since[fd] = self.handed
        elif (since := self._since.pop(fd, None)) is not None and not self._ending:
            self._vanished += self.handed - since

    @property
    def lost_max(self) -> int:
        return self._vanished

    def begin_end(self) -> None:
        self._ending = True

    def send(self, item: object) -> bool:
        try:
            if isinstance(item, list):
                self.sock.send_multipart(item, copy=False)
            else:
                self.sock.send(item, copy=False)
        except zmq.Again:
            return False
        self.handed += 1
        return True

    def try_send(self, item: object) -> bool:
        """Hand `item` to a consumer only if one has room now."""
        try:
            if type(item) is list:
                self.sock.send_multipart(item, NOBLOCK, copy=False)
            else:
                raw_send(self.sock, item, NOBLOCK, False)
        except zmq.Again:
            return False
        self.handed += 1
        return True

    @staticmethod
    def new_message(size: int) -> tuple[object, memoryview]:
        """A writable message of `size` bytes (sent without a copy)."""
        data = bytearray(size)
        return data, memoryview(data)

    def send_control(self, payload: bytes) -> bool:
        try:
            self.sock.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def finish(
        self, sent: int, linger: float, abort: threading.Event, progress: Callable[[], None]
    ) -> int:
        """Nothing to wait for: libzmq cannot confirm delivery (queued frames leave while
        the end message is announced, and on close with a linger). Returns 0."""
        return 0
