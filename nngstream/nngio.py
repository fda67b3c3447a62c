"""NNG sides of the buffer: Pull0 inlet and Push0 outlet.

Messages travel as raw `nng_msg` pointers (cffi) from `nng_recvmsg` to `nng_sendmsg`:
NNG owns the bytes, Python only moves a pointer, so forwarding never copies a payload.
pynng is used for everything else (options, listeners, dialers, pipe callbacks).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import pynng
from pynng._nng import ffi, lib

from .errors import NngstreamError
from .models import (
    CONTROL_MAX,
    CONTROL_PREFIX,
    ENVELOPE,
    Ack,
    Credit,
    EndOfStream,
    decode_control,
    encode_control,
)
from .sides import asked_port_zero, with_port

POLL_MS = 100  # how long a blocking call waits before the engine looks at its flags


def _nng_error(code: int) -> str:
    return ffi.string(lib.nng_strerror(code)).decode()


def _attach(sock: pynng.Socket, url: str, dial: bool, dial_timeout: float, what: str) -> None:
    """Listen on or dial `url`; a dial must connect once within `dial_timeout` seconds
    (afterwards NNG redials by itself when the peer restarts)."""
    if not dial:
        try:
            sock.listen(url)
        except pynng.NNGException as exc:
            raise NngstreamError(f"cannot listen on {what} address {url}: {exc}") from None
        return
    deadline = time.monotonic() + dial_timeout
    while True:
        try:
            sock.dial(url, block=True)
            return
        except pynng.NNGException as exc:
            retry = isinstance(exc, pynng.ConnectionRefused | pynng.Timeout)
            if not retry or time.monotonic() >= deadline:
                raise NngstreamError(f"cannot dial {what} address {url}: {exc}") from None
            time.sleep(0.1)


def _attach_or_close(
    sock: pynng.Socket, url: str, dial: bool, dial_timeout: float, what: str
) -> str:
    """Attach (see `_attach`) and return the address in use (the port chosen for :0)."""
    try:
        _attach(sock, url, dial, dial_timeout, what)
    except BaseException:
        sock.close()
        raise
    if not dial and asked_port_zero(url):
        return with_port(url, int(str(sock.listeners[0].local_address).rsplit(":", 1)[1]))
    return url


_OTHER_CONTROL = object()  # a control message other than the end (keyed routing's info)


def _control(msg: object, size: int) -> EndOfStream | object | None:
    """The end message in `msg`, `_OTHER_CONTROL` for another control message, or None if
    it carries data (looks at one byte of most data messages: control messages start
    with a zero byte)."""
    if size >= CONTROL_MAX or ffi.cast("char *", lib.nng_msg_body(msg))[0] != b"\x00":
        return None
    data = ffi.buffer(lib.nng_msg_body(msg), size)
    if data[: len(CONTROL_PREFIX)] != CONTROL_PREFIX:
        return None
    try:
        return decode_control(data[:])
    except ValueError:
        return _OTHER_CONTROL


class _PipeCounter:
    """Counts a socket's connected pipes; refuses new ones once told to stop accepting."""

    def __init__(
        self,
        sock: pynng.Socket,
        on_change: Callable[[], None],
        on_removed: Callable[[int], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._on_change = on_change
        self._on_removed = on_removed
        self.live: set[int] = set()
        self.seen = False
        self.joined = 0  # connections ever completed
        self.accepting = True
        sock.add_pre_pipe_connect_cb(self._pre)
        sock.add_post_pipe_connect_cb(self._added)
        sock.add_post_pipe_remove_cb(self._removed)

    @property
    def count(self) -> int:
        return len(self.live)

    def _pre(self, pipe: pynng.Pipe) -> None:
        if not self.accepting:
            pipe.close()

    def _added(self, pipe: pynng.Pipe) -> None:
        with self._lock:
            self.live.add(pipe.id)
            self.seen = True
            self.joined += 1
        self._on_change()

    def _removed(self, pipe: pynng.Pipe) -> None:
        with self._lock:
            self.live.discard(pipe.id)
        if self._on_removed is not None:
            self._on_removed(pipe.id)
        self._on_change()


IN_CREDIT = 16  # credit asked by an IN that dials an acked buffer's OUT
STAMP_SIZE = 16  # acked delivery: producer pipe id and sequence, big-endian u64s (NNG header)


class NngInlet:
    """Producers' side: an NNG Pull0 socket. Messages and bytes per producer connection
    come from NNG's pipe statistics (`per_producer`), at no cost per message."""

    def __init__(
        self,
        url: str,
        *,
        dial: bool,
        dial_timeout: float,
        on_change: Callable[[], None],
        stamp: bool = False,
        acked: bool = False,
    ) -> None:
        """`acked`: dial an acked or keyed buffer's OUT as one of its consumers (Pair1,
        credit, envelope removed, acknowledged once taken into this buffer)."""
        if acked:
            self.sock = pynng.Pair1(recv_timeout=POLL_MS, recv_max_size=0)
        else:
            self.sock = pynng.Pull0(recv_timeout=POLL_MS, recv_max_size=0, recv_buffer_size=1)
        self._acked = acked
        self._pending = 0  # acked: messages taken and not yet acknowledged
        self._stamp = stamp  # note each message's per-producer sequence (acked delivery)
        self._seqs: dict[int, int] = {}  # acked delivery: pipe id -> next sequence
        self._gone: dict[int, list[int]] = {}  # pipe id -> [messages, bytes] of gone pipes
        self._pipes = _PipeCounter(self.sock, on_change, self._pipe_gone)
        self._msg_p = ffi.new("nng_msg **")
        self._raw = self.sock.socket
        self._sock_id = lib.nng_socket_id(self._raw)
        self.end_marker_seen = False
        self.end: EndOfStream | None = None  # the end message received, if any
        self.url = _attach_or_close(self.sock, url, dial, dial_timeout, "IN")
        if acked:
            self.sock.send(encode_control(Credit(credit=IN_CREDIT)))

    @property
    def peers(self) -> int:
        return self._pipes.count

    @property
    def peers_seen(self) -> bool:
        return self._pipes.seen

    @property
    def peers_joined(self) -> int:
        return self._pipes.joined

    def recv(self, block: bool = True) -> tuple[object, int] | None:
        """One message and its size, or None after POLL_MS (or at once if not `block`).
        Zero-length messages and control messages (an upstream buffer's end message) are
        noted and freed, never returned."""
        raw, msg_p, flags = self._raw, self._msg_p, 0 if block else lib.NNG_FLAG_NONBLOCK
        while True:
            if self._pending >= IN_CREDIT // 2:
                self._ack()  # what was returned so far is in this buffer now
            if self._pending and block:  # acknowledge before waiting
                rc = lib.nng_recvmsg(raw, msg_p, lib.NNG_FLAG_NONBLOCK)
                if rc == lib.NNG_EAGAIN:
                    self._ack()
                    rc = lib.nng_recvmsg(raw, msg_p, flags)
            else:
                rc = lib.nng_recvmsg(raw, msg_p, flags)
            if rc in (lib.NNG_ETIMEDOUT, lib.NNG_EAGAIN):
                self._ack()
                return None
            if rc:
                raise NngstreamError(f"receiving on IN failed: {_nng_error(rc)}")
            msg = msg_p[0]
            size = lib.nng_msg_len(msg)
            if size and (end := _control(msg, size)) is _OTHER_CONTROL:
                lib.nng_msg_free(msg)  # keyed routing's info message: not forwarded
                continue
            if size and end is None and self._acked:
                lib.nng_msg_trim(msg, ENVELOPE.size)  # the upstream buffer's envelope
                lib.nng_msg_header_clear(msg)  # Pair1's hop count: not ours to forward
                self._pending += 1
                size -= ENVELOPE.size
            if size and end is None:
                if self._stamp:  # producer and sequence travel in the message's NNG header
                    pid = lib.nng_pipe_id(lib.nng_msg_get_pipe(msg))
                    seq = self._seqs.get(pid, 0)
                    self._seqs[pid] = seq + 1
                    lib.nng_msg_header_clear(msg)
                    lib.nng_msg_header_append_u64(msg, pid)
                    lib.nng_msg_header_append_u64(msg, seq)
                return msg, size
            if size:
                self.end = end
            self.end_marker_seen = True
            lib.nng_msg_free(msg)

    def _ack(self) -> None:
        if self._pending:
            with contextlib.suppress(pynng.NNGException):  # the upstream left: it redelivers
                self.sock.send(encode_control(Ack(n=self._pending)))
            self._pending = 0

    def _pipe_gone(self, pipe_id: int) -> None:
        vals = _pipe_stats(self._sock_id).get(pipe_id, {})
        self._gone[pipe_id] = [vals.get(b"rx_msgs", 0), vals.get(b"rx_bytes", 0)]

    @property
    def per_producer(self) -> dict[int, list[int]]:
        """Producer connection (pipe id) -> [messages, bytes] received, from NNG's
        statistics (they count zero-length and control messages too)."""
        out = dict(self._gone)
        for pid, vals in _pipe_stats(self._sock_id).items():
            out[pid] = [vals.get(b"rx_msgs", 0), vals.get(b"rx_bytes", 0)]
        return out

    def stop_accepting(self) -> None:
        self._pipes.accepting = False

    def disconnect_all(self) -> None:
        """Refuse new producers and close the connected ones."""
        self.stop_accepting()
        for pipe in self.sock.pipes:
            with contextlib.suppress(pynng.NNGException):
                pipe.close()

    @staticmethod
    def discard(item: object) -> None:
        lib.nng_msg_free(item)

    @staticmethod
    def body(item: object) -> memoryview:
        return body(item)

    def stamp(self, item: object) -> bytes:
        """The message's stamp (acked delivery: producer and sequence), b"" without."""
        if not self._stamp:
            return b""
        return bytes(ffi.buffer(lib.nng_msg_header(item), STAMP_SIZE))

    def restamp(self, item: object, stamp: bytes) -> None:
        """Put back a stamp taken with `stamp` (a message read back from the spill)."""
        if stamp:
            lib.nng_msg_header_clear(item)
            lib.nng_msg_header_append(item, stamp, len(stamp))

    @property
    def stamp_size(self) -> int:
        return STAMP_SIZE if self._stamp else 0

    def close(self) -> None:
        self.sock.close()


class NngOutlet:
    """Consumers' side: an NNG Push0 socket (round-robin over ready consumers)."""

    def __init__(
        self, url: str, *, dial: bool, dial_timeout: float, on_change: Callable[[], None]
    ) -> None:
        # send_buffer_size 0: a send returns once a consumer pipe took the message, so
        # each pipe holds at most one message in flight and the bound stays ours.
        self.sock = pynng.Push0(send_timeout=POLL_MS, send_buffer_size=0)
        self._raw = self.sock.socket
        self._sock_id = lib.nng_socket_id(self._raw)
        self._gone_tx = 0  # messages written by pipes that have gone away
        self._gone_pipes = 0
        self._vanished_tx = 0  # messages written by pipes that went away before the end
        self._ending = False
        self._at_end: dict[int, int] = {}  # tx_msgs per pipe when the end began
        self._pipes = _PipeCounter(self.sock, on_change, self._pipe_gone)
        self.url = _attach_or_close(self.sock, url, dial, dial_timeout, "OUT")

    @property
    def peers(self) -> int:
        """Consumers connected: NNG's own pipe list counts too, because the connect
        callback can run after NNG already sent on a new pipe."""
        return max(self._pipes.count, len(_pipe_tx(self._sock_id)))

    @property
    def lost_max(self) -> int:
        """Messages written to consumers that went away before the end of the stream."""
        return self._vanished_tx

    def begin_end(self) -> None:
        """From now on a consumer that leaves after an end message was written to it
        ended normally; one that leaves before still counts as a loss."""
        self._at_end = _pipe_tx(self._sock_id)
        self._ending = True

    @staticmethod
    def new_message(size: int) -> tuple[object, memoryview]:
        return new_message(size)

    def send_control(self, payload: bytes) -> bool:
        """Send a control message (a copy of `payload`); False if no consumer took it."""
        msg, view = new_message(len(payload))
        view[:] = payload
        del view
        if self.send(msg):
            return True
        lib.nng_msg_free(msg)
        return False

    def send(self, item: object) -> bool:
        """Hand `item` to a consumer; False if none took it within POLL_MS."""
        rc = lib.nng_sendmsg(self._raw, item, 0)
        if rc == 0:
            return True
        if rc in (lib.NNG_ETIMEDOUT, lib.NNG_EAGAIN):
            return False
        raise NngstreamError(f"sending on OUT failed: {_nng_error(rc)}")

    def try_send(self, item: object) -> bool:
        """Hand `item` to a consumer only if one is ready now."""
        return lib.nng_sendmsg(self._raw, item, lib.NNG_FLAG_NONBLOCK) == 0

    @staticmethod
    def discard(item: object) -> None:
        lib.nng_msg_free(item)

    def _ack(self) -> None:
        if self._pending:
            with contextlib.suppress(pynng.NNGException):  # the upstream left: it redelivers
                self.sock.send(encode_control(Ack(n=self._pending)))
            self._pending = 0

    def _pipe_gone(self, pipe_id: int) -> None:
        tx = _pipe_tx(self._sock_id).get(pipe_id, 0)
        self._gone_tx += tx
        self._gone_pipes += 1
        if not self._ending or tx <= self._at_end.get(pipe_id, 0):
            self._vanished_tx += tx  # gone without an end message

    def written(self) -> int:
        """Messages fully written to consumers' connections so far (NNG pipe statistics)."""
        return self._gone_tx + sum(_pipe_tx(self._sock_id).values())

    def finish(
        self, sent: int, linger: float, abort: threading.Event, progress: Callable[[], None]
    ) -> int:
        """Wait until every message handed to NNG is written to a connection (closing
        earlier would cut messages in flight). A consumer that vanished may have taken
        one in-flight message with it, so a shortfall of at most one per vanished pipe
        (or any, once no consumer is connected) is accepted after `linger` seconds
        without progress. Returns the shortfall."""
        last, last_change = -1, time.monotonic()
        while not abort.is_set():
            written = self.written()
            missing = sent - written
            if missing <= 0:
                return 0
            if written != last:
                last, last_change = written, time.monotonic()
                progress()
            elif time.monotonic() - last_change >= linger and (
                missing <= self._gone_pipes or self.peers == 0
            ):
                return missing
            time.sleep(0.01)
        return max(sent - self.written(), 0)

    def close(self) -> None:
        self.sock.close()


def new_message(size: int) -> tuple[object, memoryview]:
    """A fresh nng_msg of `size` bytes and a writable view of its body (fill, then send)."""
    msg_p = ffi.new("nng_msg **")
    rc = lib.nng_msg_alloc(msg_p, size)
    if rc:
        raise MemoryError(f"cannot allocate a {size}-byte NNG message: {_nng_error(rc)}")
    return msg_p[0], memoryview(ffi.buffer(lib.nng_msg_body(msg_p[0]), size))


def body(item: object) -> memoryview:
    """The payload of a received nng_msg, without copying (valid until sent or freed)."""
    return memoryview(ffi.buffer(lib.nng_msg_body(item), lib.nng_msg_len(item)))


def owned_body(msg: object) -> memoryview:
    """The payload of a received nng_msg as a view that owns the message: no copy, and
    the message is freed when the last view of it (or a slice of one) is gone, so the
    view stays valid however long it is kept. Do not free or send `msg` afterwards."""
    ptr = ffi.gc(lib.nng_msg_body(msg), lambda _body: lib.nng_msg_free(msg))
    return memoryview(ffi.buffer(ptr, lib.nng_msg_len(msg)))


def _pipe_tx(sock_id: int) -> dict[int, int]:
    """tx_msgs of every live pipe of socket `sock_id`, from NNG's statistics."""
    snap = ffi.new("nng_stat **")
    if lib.nng_stats_get(snap) != 0:
        return {}
    out: dict[int, int] = {}
    find, value = lib.nng_stat_find, lib.nng_stat_value
    try:  # a few calls per pipe: each call into NNG lets the other threads take the GIL
        node = lib.nng_stat_child(snap[0])
        while node != ffi.NULL:
            if ffi.string(lib.nng_stat_name(node)).startswith(b"pipe"):
                leaf = find(node, b"socket")
                if leaf != ffi.NULL and value(leaf) == sock_id:
                    tx = find(node, b"tx_msgs")
                    out[value(find(node, b"id"))] = value(tx) if tx != ffi.NULL else 0
            node = lib.nng_stat_next(node)
    finally:
        lib.nng_stats_free(snap[0])
    return out


def _pipe_stats(sock_id: int) -> dict[int, dict[bytes, int]]:
    """Every live pipe of socket `sock_id` and its statistics (rx_msgs, tx_bytes, ...)."""
    snap = ffi.new("nng_stat **")
    if lib.nng_stats_get(snap) != 0:
        return {}
    out: dict[int, dict[bytes, int]] = {}
    try:
        node = lib.nng_stat_child(snap[0])
        while node != ffi.NULL:
            if ffi.string(lib.nng_stat_name(node)).startswith(b"pipe"):
                vals: dict[bytes, int] = {}
                leaf = lib.nng_stat_child(node)
                while leaf != ffi.NULL:
                    vals[ffi.string(lib.nng_stat_name(leaf))] = lib.nng_stat_value(leaf)
                    leaf = lib.nng_stat_next(leaf)
                if vals.get(b"socket") == sock_id:
                    out[vals[b"id"]] = vals
            node = lib.nng_stat_next(node)
    finally:
        lib.nng_stats_free(snap[0])
    return out
