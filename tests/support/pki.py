"""A throwaway PKI for tests: a server and clients that trust each other, via certified."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from certified import Certified, admin
from certified.keys import load_certificate, load_private_key, write_pem, write_private_key
from certified.pki import KeyType, issue_certificate, new_key, pem, subject_name


@dataclass
class Pki:
    """Config dirs of identities `cn:server`, `cn:client` and `cn:other`."""

    root: Path
    server: Path
    client: Path
    other: Path
    key_type: KeyType = "ed25519"

    def add_service(self, client_dir: Path, nickname: str, url: str) -> None:
        """Register the server under `nickname` at `url` in a client's trusted services."""
        admin.add_service(client_dir, nickname, url, (self.server / "CA.crt").read_text())

    def new_identity(
        self, name: str, *, trusted: bool = True, key_type: KeyType = "ed25519"
    ) -> Path:
        """Another client identity; the server trusts it unless `trusted` is False."""
        d = self.root / name
        admin.init_identity(d, name, key_type=key_type)
        if trusted:
            admin.add_client(self.server, name, (d / "CA.crt").read_text())
        return d

    def certified(self, which: Path) -> Certified:
        return Certified(which)

    def new_user(self, login: str, *, key_type: KeyType = "ed25519") -> Path:
        """A `uid:<login>` identity (as the signer would issue) with a `key_type` key,
        trusted by the server through a users CA (of the server's key type), knowing the
        same services as cn:client."""
        users = self.root / "users-ca"
        if not users.exists():
            admin.init_identity(users, "users", key_type=self.key_type)
            admin.add_client(self.server, "users", (users / "CA.crt").read_text(), users=True)
        ca_key, ca_cert = load_private_key(users / "CA.key"), load_certificate(users / "CA.crt")
        d = self.root / f"user-{login}"
        shutil.copytree(self.client, d)
        key = new_key(key_type)
        cert = issue_certificate(ca_key, ca_cert, key.public_key(), subject_name(login, uid=login))
        write_private_key(d / "id.key", key, overwrite=True)
        write_pem(d / "id.crt", pem(cert) + pem(ca_cert), overwrite=True)
        return d


def make_pki(
    root: Path, *, server_key: KeyType = "ed25519", client_key: KeyType = "ed25519"
) -> Pki:
    """Server, client and other identities; the server's keys are `server_key`, the
    clients' `client_key`."""
    root.mkdir(parents=True, exist_ok=True)
    server = root / "server"
    admin.init_identity(server, "server", hosts=["127.0.0.1", "localhost"], key_type=server_key)
    pki = Pki(
        root=root, server=server, client=root / "client", other=root / "other", key_type=server_key
    )
    pki.new_identity("client", key_type=client_key)
    pki.new_identity("other", key_type=client_key)
    # The server also trusts itself as a client (services calling each other).
    admin.add_client(server, "server", (server / "CA.crt").read_text())
    return pki
