"""`Buffer`: many producers -> bounded FIFO -> many consumers, in threads.

One thread receives (IN -> FIFO), one sends (FIFO -> OUT) and one runs the lifecycle
(lifecycle.py) and reports metrics. Messages are opaque handles (nng_msg pointers or
zmq Frames) moved from socket to socket; only their sizes are looked at.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

import zmq

from .callback import CallbackPoster
from .errors import NngstreamError
from .fifo import BoundedFifo, WhenFull
from .lifecycle import Event, Observation, State, next_event, transition
from .metrics import Counters, RateMeter, snapshot
from .models import BufferSettings, Metrics, Proto
from .nngio import NngInlet, NngOutlet
from .zmqio import ZmqInlet, ZmqOutlet

log = logging.getLogger("nngstream")
TICK = 0.05  # seconds between lifecycle checks when nothing wakes the control thread


class Buffer:
    """The buffer of the `nngstream` CLI, usable in-process.

    `start()` opens both sides (NngstreamError if an address cannot be used) and returns;
    `stop()` drains then ends (like SIGTERM), `abort()` ends at once (a second SIGTERM);
    `wait()` returns the final state. Metrics go to `out` as JSON lines (None: nowhere).
    """

    def __init__(self, settings: BufferSettings, *, out: TextIO | None = sys.stdout) -> None:
        self.settings = settings
        self._out = out
        self._fifo: BoundedFifo[object] = BoundedFifo(
            settings.max_bytes, settings.max_messages, settings.when_full
        )
        self._cond = threading.Condition(threading.Lock())
        self._block = settings.when_full is WhenFull.BLOCK
        self._rx_waiting = False  # receiver waits for room
        self._tx_waiting = False  # sender waits for data
        self.counters = Counters()
        self._wake = threading.Event()
        self._abort = threading.Event()
        self._stop_requested = False
        self._input_ending = False  # producers gone: read what is left, then close IN
        self._input_closed = False
        self._output_finished = False
        self._error: str | None = None
        self._state = State.WAITING
        self._done = threading.Event()
        self._started = False
        self._last_progress = time.monotonic()
        self._state_since = time.monotonic()
        self._rates = RateMeter()
        self._ctx: zmq.Context | None = None
        self._inlet: NngInlet | ZmqInlet | None = None
        self._outlet: NngOutlet | ZmqOutlet | None = None
        self._poster: CallbackPoster | None = None
        self._threads: list[threading.Thread] = []
        self.undelivered = 0  # messages not confirmed delivered when the buffer ended

    # -- public API -----------------------------------------------------------------
    @property
    def state(self) -> State:
        return self._state

    def start(self) -> Buffer:
        if self._started:
            raise RuntimeError("a Buffer starts once")
        self._started = True
        s = self.settings
        if s.callback and s.cb_secret:
            self._poster = CallbackPoster(s.callback, s.cb_secret, s.certified_config)
        try:
            if Proto.ZMQ in (s.in_proto, s.out_proto):
                self._ctx = zmq.Context()
            self._outlet = self._open_outlet()
            self._inlet = self._open_inlet()
        except BaseException:
            self._close_sockets(linger=0)
            if self._poster is not None:
                self._poster.close(timeout=0)
            raise
        self._try_send = self._outlet.try_send
        self._threads = [
            threading.Thread(target=self._guard(self._receive), name="rx", daemon=True),
            threading.Thread(target=self._guard(self._send), name="tx", daemon=True),
        ]
        for t in self._threads:
            t.start()
        threading.Thread(target=self._control, name="control", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop reading from producers, deliver everything held, then end (state done)."""
        self._stop_requested = True
        self._wake.set()

    def abort(self) -> None:
        """End now; whatever is held is discarded (state failed)."""
        self._abort.set()
        self._wake.set()

    def wait(self, timeout: float | None = None) -> State | None:
        """The final state, or None if the buffer is still running after `timeout`."""
        return self._state if self._done.wait(timeout) else None

    def metrics(self) -> Metrics:
        """The current record; rates are over the time since the last report."""
        return self._snapshot(update_rates=False)

    def _snapshot(self, update_rates: bool) -> Metrics:
        with self._cond:
            buffered, nbytes = self._fifo.held, self._fifo.nbytes
        return snapshot(
            self._state,
            self._inlet.peers if self._inlet else 0,
            self._outlet.peers if self._outlet else 0,
            self.counters,
            buffered,
            nbytes,
            self._rates.rates(self.counters.bytes_in, self.counters.bytes_out, update_rates),
        )

    def __enter__(self) -> Buffer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        if not self._done.is_set():
            self.abort()
        self.wait(30)

    # -- sides ----------------------------------------------------------------------
    def _open_inlet(self) -> NngInlet | ZmqInlet:
        s = self.settings
        kw = {"dial": s.dial_in, "dial_timeout": s.dial_timeout, "on_change": self._wake.set}
        if s.in_proto is Proto.ZMQ:
            assert self._ctx is not None
            return ZmqInlet(self._ctx, s.in_url, **kw)
        return NngInlet(s.in_url, **kw)

    def _open_outlet(self) -> NngOutlet | ZmqOutlet:
        s = self.settings
        kw = {"dial": s.dial_out, "dial_timeout": s.dial_timeout, "on_change": self._wake.set}
        if s.out_proto is Proto.ZMQ:
            assert self._ctx is not None
            return ZmqOutlet(self._ctx, s.out_url, **kw)
        return NngOutlet(s.out_url, **kw)

    def _producers(self) -> int:
        inlet = self._inlet
        assert inlet is not None
        if self.settings.dial_in and inlet.end_marker_seen:
            return 0  # the upstream buffer said its stream ended
        return inlet.peers

    # -- threads --------------------------------------------------------------------
    def _guard(self, target):
        def run() -> None:
            try:
                target()
            except Exception as exc:  # reported as state failed, never a traceback to users
                log.error("%s thread failed: %s", threading.current_thread().name, exc)
                log.debug("details", exc_info=True)
                self._error = str(exc)
                self._abort.set()
                self._wake.set()

        return run

    def _receive(self) -> None:
        inlet = self._inlet
        assert inlet is not None
        c, recv, admit = self.counters, inlet.recv, self._admit
        abort = self._abort
        accepting = True
        try:
            while not abort.is_set():
                if self._stop_requested:
                    # Stop reading from producers; keep only what already arrived.
                    inlet.disconnect_all()
                    while (got := inlet.recv(block=False)) is not None:
                        c.recvd += 1
                        c.bytes_in += got[1]
                        admit(*got)
                    break
                ending = self._input_ending
                if ending and accepting:
                    inlet.stop_accepting()
                    accepting = False
                got = recv()
                if got is None:
                    if ending:  # producers were gone before this receive found nothing
                        break
                    continue
                c.recvd += 1
                c.bytes_in += got[1]
                admit(*got)
        finally:
            with self._cond:
                self._input_closed = True
                self._cond.notify_all()
            self._wake.set()

    def _admit(self, item: object, size: int) -> None:
        """Hand a received message on: straight to a consumer if the sender is idle and
        one is ready (cut-through, under the lock so the OUT socket is never used by two
        threads at once), else into the FIFO, waiting for room with `block`."""
        fifo, cond, c = self._fifo, self._cond, self.counters
        with cond:
            if self._tx_waiting and not fifo.held and self._try_send(item):
                c.sent += 1
                c.bytes_out += size
                self._last_progress = time.monotonic()
                return
            if self._block:
                while not fifo.fits(size):
                    if self._abort.is_set():
                        self._inlet.discard(item)  # type: ignore[union-attr]
                        return
                    self._rx_waiting = True
                    cond.wait(0.1)
                self._rx_waiting = False
            dropped = fifo.put(item, size)
            if dropped:
                c.dropped = fifo.dropped
            if self._tx_waiting:
                cond.notify()
        for old in dropped:
            self._inlet.discard(old)  # type: ignore[union-attr]

    def _send(self) -> None:
        outlet = self._outlet
        assert outlet is not None
        fifo, cond, c, abort = self._fifo, self._cond, self.counters, self._abort
        send = outlet.send
        size = 0  # bytes of the message sent last: released and counted at the next lock
        while True:
            with cond:
                if size:
                    fifo.release(size)
                    c.sent += 1
                    c.bytes_out += size
                    size = 0
                    if self._rx_waiting:
                        cond.notify()
                while not fifo and not self._input_closed and not abort.is_set():
                    self._tx_waiting = True
                    cond.wait(0.1)
                self._tx_waiting = False
                if abort.is_set() or not fifo:
                    break
                item, size = fifo.pop()
            while not send(item):
                if abort.is_set():
                    outlet.discard(item)
                    with cond:
                        fifo.release(size)
                    self.undelivered += 1
                    return
            self._last_progress = time.monotonic()
        if not abort.is_set():
            self.undelivered = outlet.finish(c.sent, self.settings.linger, abort, self._progressed)
            if self.undelivered:
                log.warning(
                    "%d message(s) may have been lost with consumers that disconnected",
                    self.undelivered,
                )
            self._output_finished = True
        self._wake.set()

    def _progressed(self) -> None:
        self._last_progress = time.monotonic()

    # -- lifecycle ------------------------------------------------------------------
    def _control(self) -> None:
        interval = self.settings.metrics_interval
        next_report = time.monotonic() + interval
        try:
            self._report()
            while not self._state.final:
                self._wake.wait(TICK)
                self._wake.clear()
                self._step()
                now = time.monotonic()
                if now >= next_report and not self._state.final:
                    self._report()
                    next_report = now + interval
        except Exception as exc:  # never leave wait() hanging: end as failed
            log.error("control thread failed: %s", exc, exc_info=True)
            self._error = str(exc)
            self._state = State.FAILED
            self._abort.set()
        try:
            self._finish()
        except Exception as exc:
            log.error("shutting down failed: %s", exc, exc_info=True)
            self._state = State.FAILED
        finally:
            self._done.set()

    def _observe(self) -> Observation:
        inlet = self._inlet
        assert inlet is not None
        now = time.monotonic()
        if self._state is State.DRAINING:
            idle_for = now - max(self._last_progress, self._state_since)
        else:
            idle_for = now - self._state_since
        return Observation(
            producers=self._producers(),
            producer_seen=inlet.peers_seen or inlet.end_marker_seen,
            stop_requested=self._stop_requested,
            abort_requested=self._abort.is_set(),
            output_finished=self._output_finished,
            idle_for=idle_for,
            idle_timeout=self.settings.idle_timeout,
            error=self._error is not None,
            producers_joined=inlet.peers_joined,
            producers_expected=self.settings.producers,
        )

    def _step(self) -> None:
        while (event := next_event(self._state, self._observe())) is not None:
            new = transition(self._state, event)
            if new is self._state:
                return
            log.info("state %s -> %s (%s)", self._state.value, new.value, event.value)
            if event is Event.IDLE_TIMEOUT:
                self._error = f"idle for {self.settings.idle_timeout:g} s in state {self._state}"
                log.error("giving up: %s", self._error)
            self._state = new
            self._state_since = time.monotonic()
            if new is State.DRAINING and event is Event.PRODUCERS_GONE:
                self._input_ending = True
            if new is State.FAILED:
                self._abort.set()
            if not new.final:
                self._report()

    def _report(self) -> None:
        m = self._snapshot(update_rates=True)
        line = m.model_dump_json()
        if self._out is not None:
            self._out.write(line + "\n")
            self._out.flush()
        if self._poster is not None:
            self._poster.post(line.encode())

    def _finish(self) -> None:
        for t in self._threads:
            t.join()
        done = self._state is State.DONE
        if not done:
            with self._cond:
                leftover = self._fifo.clear()
            self.undelivered = len(leftover) + self.undelivered
            for item in leftover:
                self._outlet.discard(item)  # type: ignore[union-attr]
            log.warning("ended in state failed; %d message(s) discarded", self.undelivered)
        # ZMQ can only flush on close: wait for queued frames to leave when the stream
        # completed (bounded by the idle timeout if there is one), else drop them.
        linger = (self.settings.idle_timeout or -1.0) if done else 0.0
        self._close_sockets(linger)
        self._report()
        if self._poster is not None:
            self._poster.close()
        self._done.set()

    def _close_sockets(self, linger: float) -> None:
        if self._inlet is not None:
            self._inlet.close()
        if self._outlet is not None:
            if isinstance(self._outlet, ZmqOutlet):
                self._outlet.close(-1 if linger < 0 else int(linger * 1000))
            else:
                self._outlet.close()
        if self._ctx is not None:
            # term() waits until lingering frames are out; say so if that takes long
            term = threading.Thread(target=self._ctx.term, name="zmq-term", daemon=True)
            term.start()
            term.join(5.0)
            while term.is_alive():
                log.warning("waiting for ZMQ to flush queued frames to connected peers")
                term.join(10.0)


def describe_error(exc: BaseException) -> str:
    """One line for users: NngstreamError messages as they are, others with their type."""
    if isinstance(exc, NngstreamError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
