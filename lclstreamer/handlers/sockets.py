"""The `nng_push` and `zmq_push` data handlers."""

from __future__ import annotations

import time
from typing import Any

import msgpack

from ..errors import HandlerError, PeerLost
from ..models import NNGPushHandler as NNGConfig
from ..models import ZMQPushHandler as ZMQConfig
from ..protocols import StreamContext
from .tcpqueue import parse_endpoint, send_queues

_SLICE_MS = 500  # blocking sends wake up this often, so signals are handled
_HEADER_MAX = 4096  # a multipart message's header must fit in its first 4 KiB


def chosen_urls(urls: list[str], distribute: bool, rank: int) -> list[str]:
    """The URLs a rank uses: one of them by rank (distribute) or all of them."""
    return [urls[rank % len(urls)]] if distribute else list(urls)


class _Liveness:
    """Bounds one blocked send: `send_timeout` in all, `peer_timeout` while no peer is
    connected at all (a buffer that died leaves no connection; a full one keeps it)."""

    def __init__(self, what: str, urls: list[str], send_timeout: float | None,
                 peer_timeout: float | None) -> None:  # fmt: skip
        now = time.monotonic()
        self.what, self.urls = what, urls
        self.deadline = None if send_timeout is None else now + send_timeout
        self.send_timeout, self.peer_timeout = send_timeout, peer_timeout
        self.alone_since: float | None = None

    def check(self, peers: int) -> None:
        """Raise if the wait has gone on too long, given `peers` connected now."""
        now = time.monotonic()
        if peers:
            self.alone_since = None
        elif self.alone_since is None:
            self.alone_since = now
        elif self.peer_timeout is not None and now - self.alone_since > self.peer_timeout:
            raise PeerLost(
                f"{self.what}: no peer connected at {', '.join(self.urls)} for"
                f" {self.peer_timeout:g} s (peer_timeout): the buffer is gone"
            )
        if self.deadline is not None and now > self.deadline:
            raise HandlerError(
                f"{self.what}: no peer took a message within {self.send_timeout} s"
                f" ({', '.join(self.urls)})"
            )


class NNGPushHandler:
    """Push0 socket dialing (or listening on) the configured URLs.

    Dialers reconnect by themselves when the peer restarts. On close, waits
    (up to `linger` seconds) until the peers have acknowledged every byte.
    """

    def __init__(self, cfg: NNGConfig, ctx: StreamContext, suffix: str) -> None:
        self.cfg = cfg
        self.urls = chosen_urls(cfg.urls, cfg.distribute, ctx.rank)
        self.stop = ctx.stop
        self.sock: Any = None

    def __enter__(self) -> NNGPushHandler:
        import pynng

        self._pynng = pynng
        self._ffi = pynng.ffi
        self.sock = pynng.Push0(send_timeout=_SLICE_MS)
        for url in self.urls:
            try:
                if self.cfg.mode == "dial":
                    self.sock.dial(url, block=False)
                else:
                    self.sock.listen(url)
            except pynng.NNGException as exc:
                self.sock.close()
                raise HandlerError(f"nng_push: cannot {self.cfg.mode} {url}: {exc}") from None
        return self

    def handle(self, message: memoryview | bytes) -> None:
        data = self._ffi.from_buffer(message)
        wait = None
        while True:
            try:
                self.sock.send(data)
                return
            except self._pynng.Timeout:
                if self.stop():
                    raise HandlerError("nng_push: stopped while waiting for a peer") from None
                if wait is None:
                    wait = _Liveness(
                        "nng_push", self.urls, self.cfg.send_timeout, self.cfg.peer_timeout
                    )
                wait.check(len(self.sock.pipes))

    def _unacknowledged(self) -> int:
        table = send_queues()
        pending = 0
        for pipe in self.sock.pipes:
            try:
                local = parse_endpoint(str(pipe.local_address))
                remote = parse_endpoint(str(pipe.remote_address))
            except Exception:  # pipe closed meanwhile, or not an IP transport
                continue
            if local and remote:
                pending += table.get((local, remote), 0)
        return pending

    def drain(self) -> None:
        """Wait until the kernel has delivered everything nng wrote (3 quiet samples)."""
        deadline = time.monotonic() + self.cfg.linger
        quiet = 0
        while quiet < 3:
            pending = self._unacknowledged()
            quiet = quiet + 1 if pending == 0 else 0
            if quiet < 3 and time.monotonic() > deadline:
                raise HandlerError(
                    f"nng_push: {pending} bytes not yet acknowledged by the peers after"
                    f" linger {self.cfg.linger} s; they may be lost"
                )
            time.sleep(0.02)

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self.sock is None:
            return
        try:
            if exc_type is None:
                self.drain()
        finally:
            self.sock.close()
            self.sock = None


def header_length(message: memoryview | bytes) -> int:
    """Bytes of the msgpack object that starts `message` (its header part)."""
    unpacker = msgpack.Unpacker(max_buffer_size=_HEADER_MAX)
    unpacker.feed(message[:_HEADER_MAX])
    try:
        unpacker.skip()
    except (msgpack.OutOfData, ValueError, msgpack.UnpackException):
        raise HandlerError(
            f"zmq_push (multipart): a message of {len(message)} bytes does not start with a"
            f" msgpack header of at most {_HEADER_MAX} bytes"
        ) from None
    return unpacker.tell()


class ZMQPushHandler:
    """ZeroMQ PUSH socket; on close, ZeroMQ delivers queued messages for up to `linger` s.
    With `multipart`, each message goes as two parts: its msgpack header, then the rest.

    Messages queue only towards completed connections (ZMQ_IMMEDIATE), so a send to a
    buffer that is gone blocks, and the socket monitor tells how many peers are connected.
    """

    def __init__(self, cfg: ZMQConfig, ctx: StreamContext, suffix: str) -> None:
        self.cfg = cfg
        self.urls = chosen_urls(cfg.urls, cfg.distribute, ctx.rank)
        self.stop = ctx.stop
        self.sock: Any = None

    def __enter__(self) -> ZMQPushHandler:
        import zmq

        self._zmq = zmq
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, self.cfg.high_water_mark)
        self.sock.setsockopt(zmq.SNDTIMEO, _SLICE_MS)
        self.sock.setsockopt(zmq.LINGER, int(self.cfg.linger * 1000))
        self.sock.setsockopt(zmq.IMMEDIATE, 1)
        self._monitor = self.sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
        )
        self._peers = 0
        for url in self.urls:
            try:
                if self.cfg.mode == "dial":
                    self.sock.connect(url)
                else:
                    self.sock.bind(url)
            except zmq.ZMQError as exc:
                self._close(0)
                raise HandlerError(f"zmq_push: cannot {self.cfg.mode} {url}: {exc}") from None
        return self

    def _count_peers(self) -> int:
        """Connected peers, from the monitor events received so far."""
        from zmq.utils.monitor import recv_monitor_message

        zmq = self._zmq
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            self._peers += 1 if event == zmq.EVENT_HANDSHAKE_SUCCEEDED else -1
        return max(self._peers, 0)

    def handle(self, message: memoryview | bytes) -> None:
        wait = None
        split = header_length(message) if self.cfg.multipart else 0
        while True:
            try:
                if split:  # the first part decides: the second then never waits
                    view = memoryview(message)
                    self.sock.send(view[:split], self._zmq.SNDMORE, copy=True)
                    self.sock.send(view[split:], copy=True)
                else:
                    self.sock.send(message, copy=True)
                return
            except self._zmq.Again:
                if self.stop():
                    raise HandlerError("zmq_push: stopped while waiting for a peer") from None
                if wait is None:
                    wait = _Liveness(
                        "zmq_push", self.urls, self.cfg.send_timeout, self.cfg.peer_timeout
                    )
                wait.check(self._count_peers())

    def _close(self, linger_ms: int) -> None:
        self.sock.disable_monitor()
        self._monitor.close(linger=0)
        self.sock.close(linger=linger_ms)
        self.context.term()
        self.sock = None

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self.sock is None:
            return
        # nothing can leave without a peer: do not wait `linger` for a buffer that is gone
        linger = int(self.cfg.linger * 1000) if exc_type is None and self._count_peers() else 0
        self._close(linger)
