"""The buffer's data path: IN -> bounded FIFO (and spill) -> OUT, in two threads.

The receiving thread reads messages from the inlet into the FIFO; the sending thread
hands them to the outlet and, once the input is closed and everything is out, ends the
stream (flush, then the end message). Messages are opaque handles (nng_msg pointers or
zmq Frames) moved from socket to socket; only their sizes are looked at.

Who writes what (every other thread only reads):
- the controller (engine.py): `abort`, `stop_input()`, `end_input()`;
- the receiving thread: `rx_waiting`, `input_closed`, the counters `recvd`/`bytes_in`;
- the sending thread: `output_finished`, `undelivered`, `end`;
- under `cond` (by whichever thread holds it): the FIFO, `tx_waiting`, `sent`,
  `bytes_out`, `dropped`; the spill (spill.py) is used under `cond` too;
- each thread: `error` when it fails (the controller then ends the buffer).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .fifo import BoundedFifo, WhenFull
from .metrics import Counters
from .models import BufferSettings, EndOfStream, ProducerTotals, encode_control
from .sides import Inlet, Outlet, announce_end
from .spill import Spill

log = logging.getLogger("nngstream")


class Pump:
    """Moves messages from `inlet` to `outlet` through a bounded FIFO (see module doc)."""

    def __init__(
        self,
        settings: BufferSettings,
        inlet: Inlet,
        outlet: Outlet,
        wake: Callable[[], None],
        spill: Spill | None = None,
    ) -> None:
        self.settings = settings
        self.inlet, self.outlet = inlet, outlet
        self._wake = wake  # tells the controller that something changed
        self.fifo: BoundedFifo[object] = BoundedFifo(
            settings.max_bytes, settings.max_messages, settings.when_full
        )
        self.spill = spill
        self._lock = threading.Lock()  # `cond`'s lock: `with self._lock` is cheaper
        self.cond = threading.Condition(self._lock)
        self.counters = Counters()
        self.abort = threading.Event()
        self._stop_input = False  # read what already arrived, then close IN
        self._end_input = False  # producers gone: read what is left, then close IN
        self.rx_waiting = False  # receiver waits for room
        self.tx_waiting = False  # sender waits for data
        self.input_closed = False
        self.output_finished = False
        self.undelivered = 0  # deliveries the outlet could not confirm
        self.end: EndOfStream | None = None
        self.error: str | None = None
        self.last_progress = time.monotonic()
        self._threads: list[threading.Thread] = []

    # -- controller's side ------------------------------------------------------------
    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._guard(self._receive), name="rx", daemon=True),
            threading.Thread(target=self._guard(self._send), name="tx", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop_input(self) -> None:
        """Stop reading from producers; keep only what already arrived."""
        self._stop_input = True

    def end_input(self) -> None:
        """Producers are gone: read what is still queued in IN, then close it."""
        self._end_input = True

    def join(self) -> None:
        for t in self._threads:
            t.join()

    def held(self) -> tuple[int, int]:
        """(messages, bytes) held in memory and in the spill."""
        with self.cond:
            n, b = self.fifo.held, self.fifo.nbytes
            if self.spill is not None:
                n, b = n + self.spill.messages, b + self.spill.nbytes
        return n, b

    def discard_held(self) -> int:
        """Free everything still held (after an abort); returns how many messages."""
        with self.cond:
            leftover = self.fifo.clear()
            spilled = self.spill.clear() if self.spill is not None else 0
        for item in leftover:
            self.outlet.discard(item)
        return len(leftover) + spilled

    # -- threads ----------------------------------------------------------------------
    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as exc:  # reported as state failed, never a traceback to users
                log.error("%s thread failed: %s", threading.current_thread().name, exc)
                log.debug("details", exc_info=True)
                self.error = str(exc)
                self._wake()

        return run

    def _receive(self) -> None:
        inlet, c, admit, abort = self.inlet, self.counters, self._admit, self.abort
        recv = inlet.recv
        accepting = True
        try:
            while not abort.is_set() and self.error is None:
                if self._stop_input:
                    inlet.disconnect_all()
                    while (got := recv(block=False)) is not None:
                        c.recvd += 1
                        c.bytes_in += got[1]
                        admit(*got)
                    break
                ending = self._end_input
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
            with self.cond:
                self.input_closed = True
                self.cond.notify_all()
            self._wake()

    def _admit(self, item: object, size: int) -> None:
        """Hand a received message on: straight to a consumer if the sender is idle and
        one is ready (cut-through, under the lock so the OUT socket is never used by two
        threads at once), else into the FIFO or, once the FIFO is full, the spill. With
        `block`, wait until there is room; the drop policies make room in the FIFO."""
        fifo, cond, c = self.fifo, self.cond, self.counters
        with self._lock:
            if self.tx_waiting and not fifo.held and self.outlet.try_send(item):
                c.sent += 1
                c.bytes_out += size
                self.last_progress = time.monotonic()
                return
            if self.spill is None and fifo.when_full is WhenFull.BLOCK and fifo.fits(size):
                fifo.put(item, size)  # the common case, without the checks in _store
            else:
                while not self._store(item, size):
                    if self.abort.is_set():
                        self.inlet.discard(item)
                        return
                    self.rx_waiting = True
                    cond.wait(0.1)
                self.rx_waiting = False
            if self.tx_waiting:
                cond.notify()

    def _store(self, item: object, size: int) -> bool:
        """(under cond) Put a received message into the FIFO or the spill, or apply the
        drop policy; False (nothing done) when `block` finds no room."""
        fifo, spill = self.fifo, self.spill
        if fifo.when_full is not WhenFull.BLOCK:
            for old in fifo.put(item, size):
                self.inlet.discard(old)
            self.counters.dropped = fifo.dropped
            return True
        where = self._place(size)
        if where is None:
            return False
        if where is spill:
            spill.write(self.inlet.body(item), self.inlet.stamp(item))  # type: ignore[union-attr]
            self.inlet.discard(item)
        else:
            fifo.put(item, size)
        return True

    def _place(self, size: int) -> BoundedFifo[object] | Spill | None:
        """(under cond) Where a message of `size` bytes goes now, None if nowhere has room.
        Once anything is spilled, later messages follow it there, so order is kept."""
        spill = self.spill
        if spill is not None and (spill.messages or not self.fifo.fits(size)):
            return spill if spill.fits(size) else None
        return self.fifo if self.fifo.fits(size) else None

    def _next(self) -> tuple[object, int] | None:
        """(under cond) The next message to send: the FIFO first, then the spill (which
        only holds messages that arrived after everything in the FIFO)."""
        if self.fifo:
            return self.fifo.pop()
        if self.spill is not None and self.spill.messages:
            item, size, stamp = self.spill.read(self.outlet.new_message)
            self.inlet.restamp(item, stamp)
            self.fifo.take_external(size)
            return item, size
        return None

    def _has_data(self) -> bool:
        return bool(self.fifo) or (self.spill is not None and self.spill.messages > 0)

    def _send(self) -> None:
        outlet, fifo, cond, c, abort = self.outlet, self.fifo, self.cond, self.counters, self.abort
        send = outlet.send
        size = 0  # bytes of the message sent last: released and counted at the next lock
        lock = self._lock
        while True:
            with lock:
                if size:
                    fifo.release(size)
                    c.sent += 1
                    c.bytes_out += size
                    size = 0
                    if self.rx_waiting:
                        cond.notify()
                if not fifo:  # (else the checks below are all false)
                    while not self._has_data() and not self.input_closed and not abort.is_set():
                        self.tx_waiting = True
                        cond.wait(0.1)
                    self.tx_waiting = False
                if abort.is_set() or self.error is not None:
                    return
                got = fifo.pop() if fifo else self._next()
                if got is None:
                    break
                item, size = got
            while not send(item):
                if abort.is_set():
                    outlet.discard(item)
                    with cond:
                        fifo.release(size)
                    self.undelivered += 1
                    return
            self.last_progress = time.monotonic()
        self._finish_output()

    def _finish_output(self) -> None:
        """Everything is handed over: wait until it is written, then say the stream ended."""
        outlet, c, s, abort = self.outlet, self.counters, self.settings, self.abort
        self.undelivered = outlet.finish(c.sent, s.linger, abort, self._progressed)
        if self.undelivered:
            log.warning(
                "%d message(s) may have been lost with consumers that disconnected",
                self.undelivered,
            )
        self.end = self._end_message()
        payload = encode_control(self.end)
        if s.dial_out:  # a downstream buffer: one end message, written before closing
            while not outlet.send_control(payload):
                if abort.is_set():
                    return
            outlet.finish(c.sent + 1, s.linger, abort, self._progressed)
        else:
            left = announce_end(outlet, payload, s.end_timeout, abort, self._progressed)
            if left:
                log.warning(
                    "%d consumer(s) did not leave within --end-timeout %g s of the end message;"
                    " closing anyway",
                    left,
                    s.end_timeout,
                )
        self.output_finished = True
        self._wake()

    def _end_message(self) -> EndOfStream:
        c = self.counters
        per = getattr(self.inlet, "per_producer", {})
        return EndOfStream(
            recvd=c.recvd,
            sent=c.sent,
            bytes=c.bytes_out,
            dropped=c.dropped,
            lost_max=self.lost_max(),
            redelivered=getattr(self.outlet, "redelivered", 0),
            producers={str(k): ProducerTotals(messages=v[0], bytes=v[1]) for k, v in per.items()},
        )

    def lost_max(self) -> int:
        return self.outlet.lost_max + self.undelivered

    def _progressed(self) -> None:
        self.last_progress = time.monotonic()
