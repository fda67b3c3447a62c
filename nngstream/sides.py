"""The two sides of a buffer as protocols, and what the engine does with any outlet.

`nngio.py` and `zmqio.py` implement them; the engine and the push/pull tools use only
what is declared here, so a routing policy or another transport plugs in behind them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit


class Inlet(Protocol):
    """Where messages come in (the producers' side of a buffer, a consumer's socket)."""

    url: str  # the address in use (a tcp port 0 replaced by the port chosen)
    end_marker_seen: bool  # an end message (or an empty frame) arrived

    @property
    def peers(self) -> int: ...
    @property
    def peers_seen(self) -> bool: ...
    @property
    def peers_joined(self) -> int: ...
    def recv(self, block: bool = True) -> tuple[object, int] | None: ...
    def stop_accepting(self) -> None: ...
    def disconnect_all(self) -> None: ...
    def discard(self, item: object) -> None: ...
    def body(self, item: object) -> memoryview: ...
    def stamp(self, item: object) -> bytes: ...
    def restamp(self, item: object, stamp: bytes) -> None: ...
    def close(self) -> None: ...


class Outlet(Protocol):
    """Where messages go out (the consumers' side of a buffer, a producer's socket).

    Only one thread uses an outlet at a time (the engine guarantees it)."""

    url: str

    @property
    def peers(self) -> int: ...
    @property
    def lost_max(self) -> int: ...
    def send(self, item: object) -> bool: ...
    def try_send(self, item: object) -> bool: ...
    def send_control(self, payload: bytes) -> bool: ...
    def new_message(self, size: int) -> tuple[object, memoryview]: ...
    def discard(self, item: object) -> None: ...
    def finish(
        self, sent: int, linger: float, abort: threading.Event, progress: Callable[[], None]
    ) -> int: ...
    def begin_end(self) -> None: ...
    def close(self) -> None: ...


def announce_end(
    outlet: Outlet,
    payload: bytes,
    timeout: float,
    abort: threading.Event,
    progress: Callable[[], None],
) -> int:
    """Send the end message to every connected consumer and wait until they have left.

    A consumer leaves at its first end message. Push sockets choose the consumer, so the
    message is sent once per consumer still connected, and again every second while some
    remain. Returns how many were still connected after `timeout` seconds in which none
    left (consumers that do not read end messages; they then see the disconnect)."""
    outlet.begin_end()
    peers = outlet.peers
    last_change = time.monotonic()
    while peers > 0 and not abort.is_set():
        for _ in range(peers):
            if not outlet.send_control(payload):
                break
        deadline = time.monotonic() + 1.0
        while outlet.peers >= peers and time.monotonic() < deadline and not abort.is_set():
            time.sleep(0.02)
        now, left = time.monotonic(), outlet.peers
        if left < peers:
            progress()
            last_change = now
        elif now - last_change >= timeout:
            return left
        peers = left
    return 0


def with_port(url: str, port: int) -> str:
    """`url` with its tcp port replaced (used to report the port chosen for port 0)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme, f"{host}:{port}", parts.path, "", ""))


def asked_port_zero(url: str) -> bool:
    parts = urlsplit(url)
    try:
        return parts.scheme.startswith("tcp") and parts.port == 0
    except ValueError:
        return False
