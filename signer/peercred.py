"""Who is on the other end of a UNIX socket (SO_PEERCRED), per connection."""

from __future__ import annotations

import pwd
import socket
import struct
from dataclasses import dataclass

from uvicorn.protocols.http.h11_impl import H11Protocol

from certified.serve import ConnectionScopeMixin

_UCRED = struct.Struct("3i")


@dataclass(frozen=True)
class PeerCred:
    pid: int
    uid: int
    gid: int
    login: str | None


def peer_cred(sock) -> PeerCred:
    """The kernel-reported credentials of a connected UNIX socket's peer."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    try:
        login: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        login = None
    return PeerCred(pid, uid, gid, login)


class PeerCredProtocol(ConnectionScopeMixin, H11Protocol):
    """h11 protocol that puts the peer's credentials into every request's scope."""

    def connection_scope(self, transport) -> tuple[dict, dict]:
        return {"peercred": peer_cred(transport.get_extra_info("socket"))}, {}
