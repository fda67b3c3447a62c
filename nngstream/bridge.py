"""IN and OUT on different protocols: each message is copied once, on arrival, into the
outlet's kind of message, so the FIFO, the spill and the outlet only ever hold that kind.

An NNG message cannot be handed to libzmq (nor a ZMQ frame to NNG), and messages read
back from the spill are already made by the outlet (`Outlet.new_message`); converting at
the door keeps every later step unaware of the mix. Same-protocol buffers never use this
(their messages move without a copy).
"""

from __future__ import annotations

from typing import Any

from .models import Proto
from .nngio import body as nng_body
from .nngio import lib
from .sides import Inlet, Outlet


class BridgedInlet:
    """`inlet` whose messages come out as `outlet`'s kind (one copy each). Unstamped:
    acked delivery and keyed routing need NNG on both sides (BufferSettings checks it)."""

    def __init__(self, inlet: Inlet, outlet: Outlet, out_proto: Proto) -> None:
        self._inlet, self._new = inlet, outlet.new_message
        self._nng_out = out_proto is Proto.NNG

    def recv(self, block: bool = True) -> tuple[object, int] | None:
        got = self._inlet.recv(block)
        if got is None:
            return None
        item, size = got
        msg, view = self._new(size)
        try:
            view[:] = self._inlet.body(item)
        finally:
            del view
            self._inlet.discard(item)
        return msg, size

    def body(self, item: object) -> memoryview:
        return nng_body(item) if self._nng_out else memoryview(item)  # type: ignore[arg-type]

    def discard(self, item: object) -> None:
        if self._nng_out:
            lib.nng_msg_free(item)

    @staticmethod
    def stamp(item: object) -> bytes:
        return b""

    @staticmethod
    def restamp(item: object, stamp: bytes) -> None:
        pass

    def __getattr__(self, name: str) -> Any:  # url, peers, end_marker_seen, close, ...
        return getattr(self._inlet, name)
