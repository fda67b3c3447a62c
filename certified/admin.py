"""File-level operations on a config directory: init, introduce, trust clients/services."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography import x509

from .errors import CertifiedError
from .identity import Certified
from .keys import (
    load_certificate,
    load_private_key,
    parse_certificate,
    write_pem,
    write_private_key,
)
from .layout import Layout, check_name
from .models import ServiceEntry, Signed, TrustItem
from .pki import (
    KeyType,
    ca_certificate,
    general_names,
    issue_certificate,
    new_key,
    parse_request,
    pem,
    subject_name,
)


def init_identity(
    root: Path,
    name: str,
    *,
    hosts: list[str] = (),
    emails: list[str] = (),
    uris: list[str] = (),
    days: int = 365,
    overwrite: bool = False,
    key_type: KeyType = "ed25519",
) -> Layout:
    """Create a signing CA and an identity certificate signed by it in `root`, both with
    `key_type` keys (P-256 for servers a browser reaches: browsers verify the CA too)."""
    lay = Layout(root)
    if not overwrite:
        for path in (lay.ca_key, lay.id_key):
            if path.exists():
                raise CertifiedError(f"{path} exists (use --overwrite to replace the identity)")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    ca_key, id_key = new_key(key_type), new_key(key_type)
    ca_cert = ca_certificate(ca_key, name)
    id_cert = issue_certificate(
        ca_key,
        ca_cert,
        id_key.public_key(),
        subject_name(name),
        sans=general_names(hosts, emails, uris),
        days=days,
    )
    write_private_key(lay.ca_key, ca_key, overwrite=overwrite)
    write_private_key(lay.id_key, id_key, overwrite=overwrite)
    write_pem(lay.ca_cert, pem(ca_cert), overwrite=overwrite)
    write_pem(lay.id_cert, pem(id_cert) + pem(ca_cert), overwrite=overwrite)
    return lay


def introduce(root: Path, request_pem: bytes, *, days: int = 365) -> Signed:
    """Sign another party's public key (from a CSR or certificate) with this CA."""
    lay = Layout(root)
    ca_key = load_private_key(lay.ca_key)
    ca_cert = load_certificate(lay.ca_cert)
    pub, subject, sans = parse_request(request_pem)
    cert = issue_certificate(ca_key, ca_cert, pub, subject, sans=sans, days=days)
    return Signed(signed_cert=pem(cert), ca_cert=pem(ca_cert))


def add_client(root: Path, name: str, ca_cert_pem: str, *, users: bool = False) -> Path:
    """Trust clients signed by this CA: as `cn:NAME`, or with `users` as `uid:<login>`
    (a signer's CA). What else the CA signs is seen namespaced (`cn:x@NAME`)."""
    cert = parse_certificate(ca_cert_pem, f"CA certificate for client {name!r}")
    path = Layout(root).client_file(name)
    write_pem(path, pem(cert), overwrite=True)
    marker = path.with_suffix(".users")
    if users:
        marker.touch()
    else:
        marker.unlink(missing_ok=True)
    return path


def add_service(root: Path, name: str, url: str, cert_pem: str) -> Path:
    """Map nickname -> URL, pinning the given certificate (the server's or its CA's)."""
    check_name(name, "service nickname")
    cert = parse_certificate(cert_pem, f"certificate for service {name!r}")
    try:
        entry = ServiceEntry(name=name, url=url.rstrip("/"), cert=pem(cert))
    except ValueError as exc:
        raise CertifiedError(
            f"service {name!r}: URL must look like https://HOST:PORT ({exc.errors()[0]['msg']})"
        ) from None
    path = Layout(root).service_file(name)
    write_pem(path, json.dumps(entry.model_dump(), indent=2) + "\n", overwrite=True)
    return path


def list_trust(root: Path) -> list[TrustItem]:
    """What this identity is, and whom it trusts, with expiry dates."""
    cert = Certified(root)
    items: list[TrustItem] = []

    def item(kind: str, name: str, c: x509.Certificate, url: str | None = None) -> TrustItem:
        return TrustItem(
            kind=kind,
            name=name,
            subject=c.subject.rfc4514_string(),
            url=url,
            not_after=c.not_valid_after_utc,
        )

    lay = cert.layout
    if lay.id_cert.exists():
        items.append(item("identity", cert.identity, cert.certificate))
    if lay.ca_cert.exists():
        items.append(item("ca", "CA", load_certificate(lay.ca_cert)))
    for ca in cert.trusted_clients():
        items.append(item("users" if ca.users else "client", ca.name, ca.cert))
    for name, entry in cert.services().items():
        items.append(item("service", name, parse_certificate(entry.cert, name), entry.url))
    return items
