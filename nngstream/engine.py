"""`Buffer`: the lifecycle controller around the data pump (pump.py).

The controller opens both sides, starts the pump's threads (two, or one for a plain ZMQ
IN and OUT: zmqpump.py), and runs one thread of its own that observes the pump, steps
the lifecycle (lifecycle.py), acts on the new state and reports metrics. The public API
(`stop()`, `abort()`) only records requests; the controller thread acts on them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import TextIO

import zmq

from .acked import AckedNngOutlet
from .bridge import BridgedInlet
from .callback import CallbackPoster
from .errors import NngstreamError
from .lifecycle import Event, Observation, State, next_event, transition
from .metrics import RateMeter, snapshot
from .models import BufferSettings, Delivery, Metrics, Proto
from .nngio import STAMP_SIZE, NngInlet, NngOutlet
from .pump import Pump
from .sides import Inlet, Outlet
from .sizes import format_size
from .spill import Spill
from .zmqio import ZmqInlet, ZmqOutlet
from .zmqkeyed import ZmqKeyedInlet, ZmqKeyedOutlet
from .zmqpump import ZmqPump

log = logging.getLogger("nngstream")
TICK = 0.05  # seconds between lifecycle checks when nothing wakes the control thread
BLOCKED_LOG_EVERY = 30.0  # seconds between "producers are blocked" warnings


class Buffer:
    """The buffer of the `nngstream` CLI, usable in-process.

    `start()` opens both sides (NngstreamError if an address cannot be used) and returns;
    `stop()` drains then ends (like SIGTERM), `abort()` ends at once (a second SIGTERM);
    `wait()` returns the final state. Metrics go to `out` as JSON lines (None: nowhere).
    """

    def __init__(self, settings: BufferSettings, *, out: TextIO | None = sys.stdout) -> None:
        self.settings = settings
        self._out = out
        self._wake = threading.Event()
        # requests from the public API (any thread); only the controller acts on them
        self._stop_requested = False
        self._abort_requested = False
        # written by the controller thread only
        self._state = State.WAITING
        self._state_since = time.monotonic()
        self._error: str | None = None
        self._blocked_since: float | None = None
        self._blocked_logged = 0.0
        self._done = threading.Event()
        self._started = False
        self._rates = RateMeter()
        self._ctx: zmq.Context | None = None
        self._inlet: Inlet | None = None
        self._outlet: Outlet | None = None
        self._spill: Spill | None = None
        self._pump: Pump | None = None
        self._poster: CallbackPoster | None = None

    # -- public API -----------------------------------------------------------------
    @property
    def state(self) -> State:
        return self._state

    @property
    def in_url(self) -> str:
        """The IN address in use (a tcp port 0 replaced by the port chosen)."""
        return self._inlet.url if self._inlet is not None else self.settings.in_url

    @property
    def out_url(self) -> str:
        return self._outlet.url if self._outlet is not None else self.settings.out_url

    @property
    def undelivered(self) -> int:
        """Deliveries the outlet could not confirm when the stream ended."""
        return self._pump.undelivered if self._pump is not None else 0

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
            if s.spill is not None:
                acked = s.delivery is Delivery.ACKED or s.route_by
                stamp = STAMP_SIZE if acked and s.out_proto is Proto.NNG else 0
                self._spill = Spill(s.spill, s.spill_max_bytes, stamp_size=stamp)
            self._outlet = self._open_outlet()
            self._inlet = self._open_inlet()
            if s.in_proto is not s.out_proto:
                self._inlet = BridgedInlet(self._inlet, self._outlet, s.out_proto)
            if s.ready_file is not None:
                self._write_ready_file()
        except BaseException:
            self._close_sockets(linger=0)
            if self._spill is not None:
                self._spill.close()
            if self._poster is not None:
                self._poster.close(timeout=0)
            raise
        self._pump = self._new_pump()
        self._pump.start()
        threading.Thread(target=self._control, name="control", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop reading from producers, deliver everything held, then end (state done)."""
        self._stop_requested = True
        self._wake.set()

    def abort(self) -> None:
        """End now; whatever is held is discarded (state failed)."""
        self._abort_requested = True
        self._wake.set()

    def wait(self, timeout: float | None = None) -> State | None:
        """The final state, or None if the buffer is still running after `timeout`."""
        return self._state if self._done.wait(timeout) else None

    def metrics(self) -> Metrics:
        """The current record; rates are over the time since the last report."""
        return self._snapshot(update_rates=False)

    def __enter__(self) -> Buffer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        if not self._done.is_set():
            self.abort()
        self.wait(30)

    # -- sides ----------------------------------------------------------------------
    def _new_pump(self) -> Pump:
        """One thread polling both sockets for a plain ZMQ IN and OUT (zmqpump.py), else
        a receiving and a sending thread (pump.py)."""
        inlet, outlet = self._inlet, self._outlet
        assert inlet is not None and outlet is not None
        if type(inlet) is ZmqInlet and type(outlet) is ZmqOutlet:
            return ZmqPump(self.settings, inlet, outlet, self._wake.set, self._spill)
        return Pump(self.settings, inlet, outlet, self._wake.set, self._spill)

    def _open_inlet(self) -> Inlet:
        s = self.settings
        kw = {"dial": s.dial_in, "dial_timeout": s.dial_timeout, "on_change": self._wake.set}
        if s.in_proto is Proto.ZMQ:
            assert self._ctx is not None
            if s.in_delivery is Delivery.ACKED:
                return ZmqKeyedInlet(self._ctx, s.in_url, **kw)
            return ZmqInlet(self._ctx, s.in_url, **kw)
        stamp = (s.delivery is Delivery.ACKED or bool(s.route_by)) and s.out_proto is Proto.NNG
        return NngInlet(s.in_url, stamp=stamp, acked=s.in_delivery is Delivery.ACKED, **kw)

    def _open_outlet(self) -> Outlet:
        s = self.settings
        kw = {"dial": s.dial_out, "dial_timeout": s.dial_timeout, "on_change": self._wake.set}
        if s.out_proto is Proto.ZMQ:
            assert self._ctx is not None
            if s.route_by is not None:
                return ZmqKeyedOutlet(self._ctx, s.out_url, route_by=s.route_by, **kw)
            return ZmqOutlet(self._ctx, s.out_url, **kw)
        if s.delivery is Delivery.ACKED or s.route_by is not None:
            keep = s.delivery is Delivery.ACKED
            return AckedNngOutlet(s.out_url, route_by=s.route_by, keep=keep, **kw)
        return NngOutlet(s.out_url, **kw)

    def _write_ready_file(self) -> None:
        """Write the ready file atomically (readers never see half of it)."""
        path = self.settings.ready_file
        assert path is not None
        doc = {"in_url": self.in_url, "out_url": self.out_url, "pid": os.getpid()}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(doc) + "\n")
            tmp.replace(path)
        except OSError as exc:
            raise NngstreamError(f"cannot write ready file {path} (--ready-file): {exc}") from None

    def _producers(self) -> int:
        inlet = self._inlet
        assert inlet is not None
        if self.settings.dial_in and inlet.end_marker_seen:
            return 0  # the upstream buffer said its stream ended
        return inlet.peers

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
                self._watch_blocked()
                now = time.monotonic()
                if now >= next_report and not self._state.final:
                    self._report()
                    next_report = now + interval
        except Exception as exc:  # never leave wait() hanging: end as failed
            log.error("control thread failed: %s", exc, exc_info=True)
            self._error = str(exc)
            self._state = State.FAILED
            if self._pump is not None:
                self._pump.abort.set()
        try:
            self._finish()
        except Exception as exc:
            log.error("shutting down failed: %s", exc, exc_info=True)
            self._state = State.FAILED
        finally:
            self._done.set()

    def _observe(self) -> Observation:
        inlet, pump = self._inlet, self._pump
        assert inlet is not None and pump is not None
        now = time.monotonic()
        if self._state is State.DRAINING:
            idle_for = now - max(pump.last_progress, self._state_since)
        else:
            idle_for = now - self._state_since
        return Observation(
            producers=self._producers(),
            producer_seen=inlet.peers_seen or inlet.end_marker_seen,
            stop_requested=self._stop_requested,
            abort_requested=self._abort_requested,
            output_finished=pump.output_finished,
            idle_for=idle_for,
            idle_timeout=self.settings.idle_timeout,
            error=pump.error is not None,
            producers_joined=inlet.peers_joined,
            producers_expected=self.settings.producers,
        )

    def _step(self) -> None:
        pump = self._pump
        assert pump is not None
        while (event := next_event(self._state, self._observe())) is not None:
            new = transition(self._state, event)
            if new is self._state:
                return
            log.info("state %s -> %s (%s)", self._state.value, new.value, event.value)
            if event is Event.IDLE_TIMEOUT:
                self._error = f"idle for {self.settings.idle_timeout:g} s in state {self._state}"
                log.error("giving up: %s", self._error)
            elif event is Event.ERROR:
                self._error = pump.error
            self._state = new
            self._state_since = time.monotonic()
            if new is State.DRAINING:
                if event is Event.STOP:
                    pump.stop_input()
                else:
                    pump.end_input()
            if new is State.FAILED:
                pump.abort.set()
            if not new.final:
                self._report()

    def _blocked(self) -> bool:
        pump, outlet = self._pump, self._outlet
        return bool(pump and outlet and pump.rx_waiting and outlet.peers == 0)

    def _watch_blocked(self) -> None:
        """Warn (at most every BLOCKED_LOG_EVERY s) while producers are held back because
        the buffer is full and no consumer is connected."""
        if not self._blocked():
            self._blocked_since = None
            return
        now = time.monotonic()
        if self._blocked_since is None:
            self._blocked_since = now
        if now - self._blocked_since >= 1.0 and now - self._blocked_logged >= BLOCKED_LOG_EVERY:
            self._blocked_logged = now
            n, nbytes = self._pump.held()  # type: ignore[union-attr]
            hint = "" if self.settings.spill else "; --spill DIR would keep producers going"
            log.warning(
                "buffer full (%d messages, %s) and no consumer connected for %.0f s:"
                " producers are blocked%s",
                n,
                format_size(nbytes),
                now - self._blocked_since,
                hint,
            )

    def _snapshot(self, update_rates: bool) -> Metrics:
        pump = self._pump
        buffered, nbytes = pump.held() if pump is not None else (0, 0)
        spill = self._spill
        c = pump.counters if pump is not None else None
        return snapshot(
            self._state,
            self._inlet.peers if self._inlet else 0,
            self._outlet.peers if self._outlet else 0,
            c,
            buffered,
            nbytes,
            self._rates.rates(c.bytes_in, c.bytes_out, update_rates) if c else (0.0, 0.0),
            lost_max=pump.lost_max() if pump is not None else 0,
            redelivered=getattr(self._outlet, "redelivered", 0),
            blocked=self._blocked(),
            spilled=spill.total_messages if spill is not None else 0,
            spilled_bytes=spill.total_bytes if spill is not None else 0,
            spill_held=spill.messages if spill is not None else 0,
            in_url=self.in_url,
            out_url=self.out_url,
        )

    def _report(self) -> None:
        m = self._snapshot(update_rates=True)
        line = m.model_dump_json()
        if self._out is not None:
            self._out.write(line + "\n")
            self._out.flush()
        if self._poster is not None:
            self._poster.post(line.encode())

    def _finish(self) -> None:
        pump = self._pump
        assert pump is not None
        pump.join()
        done = self._state is State.DONE
        if not done:
            discarded = pump.discard_held()
            log.warning(
                "ended in state failed%s; %d message(s) discarded, %d undelivered",
                f" ({self._error})" if self._error else "",
                discarded,
                pump.undelivered,
            )
        # ZMQ can only flush on close: wait for queued frames to leave when the stream
        # completed (bounded by the idle timeout if there is one), else drop them.
        linger = (self.settings.idle_timeout or -1.0) if done else 0.0
        self._close_sockets(linger)
        self._report()
        if done and pump.end is not None and pump.end.lost_max:
            log.warning(
                "stream ended; up to %d message(s) may have been lost with consumers that"
                " vanished (upper bound)",
                pump.end.lost_max,
            )
        if self._spill is not None:
            self._spill.close()
        if self._poster is not None:
            self._poster.close()
        self._done.set()

    def _close_sockets(self, linger: float) -> None:
        if self._inlet is not None:
            self._inlet.close()
        if self._outlet is not None:
            if isinstance(self._outlet, ZmqOutlet | ZmqKeyedOutlet):
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
