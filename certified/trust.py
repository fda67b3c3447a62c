"""Which identity a client certificate proves, given the CAs a server trusts (pure).

A trusted CA is authoritative only for what it was trusted as: a CA added with
`--users` (the signer) for `uid:<login>`; a CA added as NAME for `cn:NAME`. Anything
else it signed is namespaced by its name (`cn:other@NAME`, `uid:alice@NAME`), so no
trusted CA can mint another party's identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class ClientCA:
    """A CA whose clients a server accepts, and what it is authoritative for."""

    name: str
    cert: x509.Certificate
    users: bool = False  # issues user certificates (uid:<login>), like the signer


def issuer_of(leaf: x509.Certificate, cas: list[ClientCA]) -> ClientCA | None:
    """The trusted CA whose key signed `leaf`, if any."""
    for ca in cas:
        if ca.cert.subject != leaf.issuer:
            continue
        try:
            leaf.verify_directly_issued_by(ca.cert)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    return None


def client_identity_of(leaf: x509.Certificate, cas: list[ClientCA]) -> str | None:
    """`uid:<login>` / `cn:<name>` when the issuer is authoritative, else namespaced."""
    ca = issuer_of(leaf, cas)
    if ca is None:
        return None
    uids = leaf.subject.get_attributes_for_oid(NameOID.USER_ID)
    if uids:
        ident = f"uid:{uids[0].value}"
        return ident if ca.users else f"{ident}@{ca.name}"
    cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else f"serial-{leaf.serial_number:x}"
    return f"cn:{cn}" if (cn == ca.name and not ca.users) else f"cn:{cn}@{ca.name}"
