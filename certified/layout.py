"""Where an identity's files live, and the config-directory search order.

Layout of a config directory::

    CA.key  CA.crt           this identity's signing key and self-signed CA
    id.key  id.crt           this identity's key and certificate
    known_clients/NAME.crt   CA certificates whose clients this identity trusts
    known_servers/NAME.json  trusted services: {name, url, cert}

Search order (`certified.configfind`): explicit flag, ``$CERTIFIED_CONFIG``,
``$VIRTUAL_ENV/etc/certified``, ``/etc/certified``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .configfind import config_candidates, find_config
from .errors import CertifiedError, ConfigError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def find_config_dir(flag: str | os.PathLike | None = None, *, create: bool = False) -> Path:
    """Resolve the config directory; with `create`, the first candidate is used as is."""
    path, _explicit = find_config(flag, "CERTIFIED_CONFIG", "certified", directory=True)
    if path is not None:
        return path
    cands = config_candidates(flag, "CERTIFIED_CONFIG", "certified", os.environ)
    if create:
        return cands[0]
    raise ConfigError(
        "no certified config directory found (tried "
        + ", ".join(str(c) for c in cands)
        + "); pass --config DIR or set CERTIFIED_CONFIG"
    )


def check_name(name: str, what: str = "name") -> str:
    if not NAME_RE.match(name):
        raise CertifiedError(f"invalid {what} {name!r}: use letters, digits, '.', '_' or '-'")
    return name


@dataclass(frozen=True)
class Layout:
    """Paths inside one config directory."""

    root: Path

    @property
    def ca_key(self) -> Path:
        return self.root / "CA.key"

    @property
    def ca_cert(self) -> Path:
        return self.root / "CA.crt"

    @property
    def id_key(self) -> Path:
        return self.root / "id.key"

    @property
    def id_cert(self) -> Path:
        return self.root / "id.crt"

    @property
    def known_clients(self) -> Path:
        return self.root / "known_clients"

    @property
    def known_servers(self) -> Path:
        return self.root / "known_servers"

    def client_file(self, name: str) -> Path:
        return self.known_clients / f"{check_name(name, 'client name')}.crt"

    def service_file(self, name: str) -> Path:
        return self.known_servers / f"{check_name(name, 'service nickname')}.json"
