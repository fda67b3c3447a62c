"""Kernel send-queue sizes of TCP connections, read from /proc/net/tcp (Linux).

NNG has no linger: closing a socket (and exiting) drops a message that is
still being written. The nng_push handler therefore waits, before closing,
until the kernel send queue of every connection is empty, which means the
peer has acknowledged every byte nng wrote.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

Endpoint = tuple[str, int]


def _decode(field: str) -> Endpoint:
    """'0100007F:1F90' -> ('127.0.0.1', 8080); IPv6 too (kernel word order)."""
    hexip, hexport = field.split(":")
    raw = bytes.fromhex(hexip)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:
        words = b"".join(struct.pack("<I", w) for w in struct.unpack(">4I", raw))
        ip = socket.inet_ntop(socket.AF_INET6, words)
    return ip, int(hexport, 16)


def parse_proc_net_tcp(text: str) -> dict[tuple[Endpoint, Endpoint], int]:
    """(local, remote) -> bytes in the send queue, for every line of /proc/net/tcp{,6}."""
    out: dict[tuple[Endpoint, Endpoint], int] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 5:
            continue
        tx_hex = parts[4].split(":")[0]
        out[(_decode(parts[1]), _decode(parts[2]))] = int(tx_hex, 16)
    return out


def send_queues() -> dict[tuple[Endpoint, Endpoint], int]:
    """Send-queue sizes of every TCP connection of this network namespace."""
    table: dict[tuple[Endpoint, Endpoint], int] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            table.update(parse_proc_net_tcp(Path(name).read_text()))
        except OSError:
            continue
    return table


def parse_endpoint(text: str) -> Endpoint | None:
    """'127.0.0.1:5000' or '[::1]:5000' -> ('127.0.0.1', 5000); None if not an IP endpoint."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    host = host.strip("[]")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        host = socket.inet_ntop(family, socket.inet_pton(family, host))
    except OSError:
        return None
    return host, int(port)
