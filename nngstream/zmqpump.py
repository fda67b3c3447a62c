"""The data pump for a plain ZMQ IN and ZMQ OUT: one thread polls both sockets.

With two busy threads (pump.py), every libzmq call releases the GIL and hands it to the
other thread; with 64 KiB messages these hand-overs cost more than the pump's own work.
`ZmqPump` keeps everything `Pump` does (the same FIFO and spill, drop policies, counters,
stop/end of input, end of stream, abort; it reuses `Pump`'s methods) and runs it in one
thread: while nothing is held it waits on IN and passes each message straight to OUT,
as a minimal relay does; with messages held it sends them until OUT refuses one, reads
IN until it has nothing, then waits in `zmq_poll`: for room only while producers keep
sending (reading IN in batches, at least every BATCH_MS), for either side otherwise.
The engine chooses it for a `ZmqInlet` with a `ZmqOutlet` (at-most-once, no keyed
routing, no bridge).

Who writes what: as in pump.py, with the one thread in the place of both of Pump's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import zmq
from zmq.backend import zmq_poll

from .fifo import WhenFull
from .models import BufferSettings
from .pump import Pump
from .spill import Spill
from .zmqio import NOBLOCK, POLL_MS, ZmqInlet, ZmqOutlet, raw_recv

# plain ints: `zmq.POLLIN` is an enum Flag, and `int & Flag` builds a Flag (a few us, in
# the loop's hottest lines, several times per message)
_POLLIN, _POLLOUT = int(zmq.POLLIN), int(zmq.POLLOUT)
# producers sending while no consumer has room: the longest wait before reading what
# they sent (meanwhile it waits in libzmq's queues, HWM messages per producer, and the
# kernel's socket buffers)
BATCH_MS = 1


class ZmqPump(Pump):
    """Moves messages from a ZMQ PULL to a ZMQ PUSH socket in one thread (module doc)."""

    def __init__(
        self,
        settings: BufferSettings,
        inlet: ZmqInlet,
        outlet: ZmqOutlet,
        wake: Callable[[], None],
        spill: Spill | None = None,
    ) -> None:
        super().__init__(settings, inlet, outlet, wake, spill)
        self._in_sock, self._out_sock = inlet.sock, outlet.sock

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._guard(self._run), name="pump", daemon=True)]
        self._threads[0].start()

    def _run(self) -> None:
        inlet, fifo, c, lock, abort = self.inlet, self.fifo, self.counters, self._lock, self.abort
        recv, try_send, store = inlet.recv, self.outlet.try_send, self._store
        take, add = inlet.take, fifo.add
        after_fifo, has_data = self._next, self._has_data  # the spill, after the FIFO
        in_sock, out_sock = self._in_sock, self._out_sock
        plain = self.spill is None and fifo.when_full is WhenFull.BLOCK
        held: tuple[object, int] | None = None  # received, waiting for room (block)
        out: tuple[object, int] | None = None  # taken from the FIFO, not yet taken by OUT
        reading = accepting = True
        quiet_since: float | None = None  # producers gone: since when IN had nothing
        arrived = False  # IN had messages since the last wait
        try:
            while not abort.is_set() and self.error is None:
                moved = empty = False
                if reading and out is None and held is None and not has_data():
                    # nothing held: wait for a message and pass it straight on, as a
                    # minimal relay does (the FIFO only if no consumer has room)
                    got = recv()
                    if got is None:
                        empty = True
                    else:
                        c.recvd += 1
                        c.bytes_in += got[1]
                        with lock:
                            if try_send(got[0]):
                                c.sent += 1
                                c.bytes_out += got[1]
                                self.last_progress = time.monotonic()
                            elif not store(*got):  # (an empty FIFO has room: never)
                                held = got
                else:
                    with lock:
                        # OUT: hand over what is held while a consumer has room
                        while True:
                            if out is None:
                                out = fifo.pop() if fifo else after_fifo()
                                if out is None:
                                    break
                            if not try_send(out[0]):  # (one refusal per wait: cheaper
                                break  # than asking ZMQ_EVENTS before every message)
                            fifo.release(out[1])
                            c.sent += 1
                            c.bytes_out += out[1]
                            out = None
                            moved = True
                        if moved:
                            self.last_progress = time.monotonic()
                        # IN: read what arrived while there is room
                        if reading:
                            if held is not None and store(*held):
                                held = None
                                moved = True
                            # (until refused: one exception per batch costs less than
                            # asking ZMQ_EVENTS before every message)
                            while held is None:
                                try:
                                    frame = raw_recv(in_sock, NOBLOCK, False)
                                except zmq.Again:
                                    empty = True
                                    break
                                got = take(frame)
                                if got is None:  # an end marker
                                    continue
                                c.recvd += 1
                                c.bytes_in += got[1]
                                moved = True
                                arrived = True
                                if not (plain and add(*got)) and not store(*got):
                                    held = got
                            self.rx_waiting = held is not None
                if reading:
                    if self._stop_input:  # keep only what already arrived
                        if accepting:
                            inlet.disconnect_all()
                            accepting = False
                            empty = False  # read once more after refusing producers
                        elif empty:
                            reading = False
                    elif self._end_input:  # producers gone: read until IN stays empty
                        if accepting:
                            inlet.stop_accepting()
                            accepting = False
                        if not empty:
                            quiet_since = None
                        elif quiet_since is None:
                            quiet_since = time.monotonic()
                        elif time.monotonic() - quiet_since >= POLL_MS / 1000:
                            reading = False
                    if not reading:
                        self._close_input()
                if not reading and out is None and not has_data():
                    break  # everything read has been handed to OUT
                if out is not None or (held is not None and not moved):
                    # OUT refused (no consumer has room) or IN is full: wait rather than
                    # retry at once. While producers send, wait for room only and read
                    # IN in batches (waking for each message that arrives cost more than
                    # the relay's whole loop); IN quiet: wait for either side.
                    batching = arrived and out is not None
                    in_flags = _POLLIN if reading and held is None and not batching else 0
                    zmq_poll(
                        [(in_sock, in_flags), (out_sock, _POLLOUT if out is not None else 0)],
                        BATCH_MS if batching else POLL_MS,
                    )
                    arrived = False
            else:  # aborted or failed: free what this thread holds
                if held is not None:
                    inlet.discard(held[0])
                if out is not None:
                    self.outlet.discard(out[0])
                    with lock:
                        fifo.release(out[1])
                    self.undelivered += 1
                return
        finally:
            if reading:
                self._close_input()
        self._finish_output()

    def _close_input(self) -> None:
        with self.cond:
            self.input_closed = True
            self.cond.notify_all()
        self._wake()
