"""The `zmq_rep` (answer consumer requests) and `zmq_pub` (publish) data handlers."""

from __future__ import annotations

import collections
import sys
import threading
import time
from typing import Any

from ..errors import HandlerError
from ..models import ZMQPubHandler as PubConfig
from ..models import ZMQRepHandler as RepConfig
from ..protocols import StreamContext
from .sockets import chosen_urls

_SLICE_MS = 500  # blocking waits wake up this often, so a stop request is seen
READY, REPLY, DONE = b"R", b"A", b"D"


def log(message: str) -> None:
    """One line on stderr (the job's log)."""
    print(f"lclstreamer: {message}", file=sys.stderr, flush=True)


def backend_of(url: str, backend_url: str | None) -> str:
    """Where the ranks reach rank 0's broker: `backend_url`, else the port after `url`'s on
    its host (127.0.0.1 when `url` binds every interface)."""
    if backend_url is not None:
        return backend_url
    host, _, port = url.removeprefix("tcp://").rpartition(":")
    if host in ("*", "0.0.0.0", ""):
        host = "127.0.0.1"
    return f"tcp://{host}:{int(port) + 1}"


class Broker(threading.Thread):
    """Rank 0's thread between consumers (ROUTER at `url`) and ranks (ROUTER at `backend`).

    A rank says READY when it holds a message; a consumer request goes to a ready rank,
    or waits until one is. The rank's answer goes back to that consumer. The broker ends
    when every rank said DONE; requests left then are counted as unanswered.
    """

    def __init__(self, context: Any, url: str, backend: str, ranks: int) -> None:
        import zmq

        super().__init__(name="zmq_rep-broker", daemon=True)
        self._zmq = zmq
        self.front = context.socket(zmq.ROUTER)
        self.back = context.socket(zmq.ROUTER)
        self.front.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a reply to a gone consumer fails
        for sock, where in ((self.front, url), (self.back, backend)):
            sock.setsockopt(zmq.LINGER, 0)
            try:
                sock.bind(where.replace("0.0.0.0", "*"))
            except zmq.ZMQError as exc:
                self.front.close()
                self.back.close()
                raise HandlerError(f"zmq_rep: cannot bind {where}: {exc}") from None
        self.ranks = ranks
        self.served = 0
        self.requests = 0
        self.unanswered = 0
        self.redelivered = 0  # answers whose consumer had left, given to the next request
        self.undelivered = 0  # such answers left when the run ended
        self.error: BaseException | None = None
        self.abandon = threading.Event()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the owner at close
            self.error = exc
        finally:
            self.front.close(linger=1000)
            self.back.close(linger=0)

    def _loop(self) -> None:
        zmq = self._zmq
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        ready: collections.deque[bytes] = collections.deque()
        waiting: collections.deque[bytes] = collections.deque()
        orphans: collections.deque[Any] = collections.deque()  # answers whose consumer left
        done = 0

        def send(client: bytes, message: Any) -> bool:
            """Answer `client`; False if it has left (ROUTER_MANDATORY)."""
            try:
                self.front.send_multipart([client, b"", message], copy=False)
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    raise
                return False
            self.served += 1
            return True

        def deliver(client: bytes, message: Any) -> None:
            """Answer `client`, or, if it has left, the next waiting consumer; with none
            waiting, keep the message for the next request."""
            if send(client, message):
                return
            while waiting:
                if send(waiting.popleft(), message):
                    self.redelivered += 1
                    return
            orphans.append(message)

        while done < self.ranks and not self.abandon.is_set():
            events = dict(poller.poll(_SLICE_MS))
            if self.back in events:
                frames = self.back.recv_multipart(copy=False)
                rank_id, kind = frames[0].bytes, frames[1].bytes
                if kind == READY:
                    if waiting:
                        self.back.send_multipart([rank_id, waiting.popleft()])
                    else:
                        ready.append(rank_id)
                elif kind == REPLY:
                    deliver(frames[2].bytes, frames[3])
                elif kind == DONE:
                    done += 1
            if self.front in events:
                frames = self.front.recv_multipart(copy=False)
                client = frames[0].bytes
                self.requests += 1
                if orphans:
                    if send(client, orphans[0]):
                        orphans.popleft()
                        self.redelivered += 1
                elif ready:
                    self.back.send_multipart([ready.popleft(), client])
                else:
                    waiting.append(client)
        self.unanswered = len(waiting)
        self.undelivered = len(orphans)


class ZMQRepHandler:
    """Every rank holds its messages until a consumer asks for one (through rank 0)."""

    def __init__(self, cfg: RepConfig, ctx: StreamContext, suffix: str) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.backend = backend_of(cfg.url, cfg.backend_url)
        self.broker: Broker | None = None
        self.sock: Any = None
        self.sent = 0

    def __enter__(self) -> ZMQRepHandler:
        import zmq

        self._zmq = zmq
        self.context = zmq.Context()
        try:
            if self.ctx.rank == 0:
                self.broker = Broker(self.context, self.cfg.url, self.backend, self.ctx.size)
                self.broker.start()
            self.sock = self.context.socket(zmq.DEALER)
            self.sock.setsockopt(zmq.LINGER, int(self.cfg.linger * 1000))
            self.sock.connect(self.backend.replace("0.0.0.0", "127.0.0.1"))
        except BaseException:
            self.context.destroy(linger=0)
            raise
        return self

    def handle(self, message: memoryview | bytes) -> None:
        self.sock.send(READY)
        limit = self.cfg.request_timeout
        deadline = None if limit is None else time.monotonic() + limit
        while not self.sock.poll(_SLICE_MS):
            if self.ctx.stop():
                raise HandlerError("zmq_rep: stopped while waiting for a consumer request")
            if self.broker is not None and not self.broker.is_alive():
                raise HandlerError(f"zmq_rep: the request broker failed: {self.broker.error}")
            if deadline is not None and time.monotonic() > deadline:
                raise HandlerError(
                    f"zmq_rep: no consumer asked for a message within {limit} s ({self.cfg.url})"
                )
        client = self.sock.recv()
        self.sock.send_multipart([REPLY, client, message], copy=True)
        self.sent += 1

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self.sock is None:
            return
        try:
            if exc_type is None:
                self.sock.send(DONE)
            self.sock.close(linger=int(self.cfg.linger * 1000) if exc_type is None else 0)
            if self.broker is not None:
                if exc_type is not None:
                    self.broker.abandon.set()
                while self.broker.is_alive():
                    self.broker.join(_SLICE_MS / 1000)
                    if self.ctx.stop():
                        self.broker.abandon.set()
                b = self.broker
                if b.error is not None and exc_type is None:
                    raise HandlerError(f"zmq_rep: the request broker failed: {b.error}")
                tail = (
                    f"; {b.unanswered} consumer request(s) unanswered: those consumers wait"
                    " for more data (ZeroMQ request/reply has no end of stream; stop"
                    " indexamajig with SIGUSR1)"
                    if b.unanswered
                    else "; consumers that ask again will wait (no end of stream)"
                )
                lost = (
                    f"; {b.undelivered} message(s) NOT delivered: their consumer left and no"
                    " other asked"
                    if b.undelivered
                    else ""
                )
                again = (
                    f" ({b.redelivered} re-served after their consumer left)"
                    if b.redelivered
                    else ""
                )
                log(
                    f"zmq_rep: end of run, {b.served} messages served at {self.cfg.url}"
                    f"{again}{lost}{tail}"
                )
                if b.undelivered and exc_type is None:
                    raise HandlerError(
                        f"zmq_rep: {b.undelivered} message(s) could not be delivered"
                        " (their consumer left before the answer)"
                    )
        finally:
            self.sock = None
            self.context.destroy(linger=0)


class ZMQPubHandler:
    """A PUB socket; each message goes out as [topic, message] (or alone without topic).

    PUB drops messages for subscribers that are not connected or are too slow
    (ZeroMQ's semantics); use zmq_push or zmq_rep where every message must arrive.
    """

    def __init__(self, cfg: PubConfig, ctx: StreamContext, suffix: str) -> None:
        self.cfg = cfg
        self.urls = chosen_urls(cfg.urls, cfg.distribute, ctx.rank)
        self.topic = cfg.topic.encode()
        self.sock: Any = None

    def __enter__(self) -> ZMQPubHandler:
        import zmq

        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, self.cfg.high_water_mark)
        self.sock.setsockopt(zmq.LINGER, int(self.cfg.linger * 1000))
        for url in self.urls:
            try:
                if self.cfg.mode == "dial":
                    self.sock.connect(url)
                else:
                    self.sock.bind(url.replace("0.0.0.0", "*"))
            except zmq.ZMQError as exc:
                self.sock.close(linger=0)
                self.context.term()
                raise HandlerError(f"zmq_pub: cannot {self.cfg.mode} {url}: {exc}") from None
        return self

    def handle(self, message: memoryview | bytes) -> None:
        if self.topic:
            self.sock.send_multipart([self.topic, message], copy=True)
        else:
            self.sock.send(message, copy=True)

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self.sock is None:
            return
        self.sock.close(linger=int(self.cfg.linger * 1000) if exc_type is None else 0)
        self.context.term()
        self.sock = None
