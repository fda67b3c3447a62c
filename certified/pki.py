"""Pure x.509 construction: CAs, leaf certificates, CSRs, CRLs, identities.

Keys are ed25519 (the default) or ECDSA P-256 (what browsers accept); a CA of either
type signs keys of either type.

Nothing here touches the file system; see `keys.py` and `layout.py` for that.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import CertifiedError

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
KeyType = Literal["ed25519", "p256"]
KEY_TYPES: tuple[KeyType, ...] = ("ed25519", "p256")
ACCEPTED = "only ed25519 or ECDSA P-256 keys are accepted"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key(key_type: KeyType = "ed25519") -> PrivateKey:
    """A fresh private key of `key_type` (ed25519, or ECDSA on NIST P-256)."""
    if key_type == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise CertifiedError(f"unknown key type {key_type!r} (use one of {', '.join(KEY_TYPES)})")


def key_type_of(key: PrivateKey | PublicKey) -> KeyType:
    """`ed25519` or `p256`; any other key is refused with a clear error."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
        key.curve, ec.SECP256R1
    ):
        return "p256"
    raise CertifiedError(f"{ACCEPTED} (got {type(key).__name__})")


def _digest(signing_key: PrivateKey) -> hashes.HashAlgorithm | None:
    """The hash a signature by this key uses: none for ed25519, SHA-256 for P-256."""
    return None if key_type_of(signing_key) == "ed25519" else hashes.SHA256()


def subject_name(cn: str, *, uid: str | None = None) -> x509.Name:
    """A subject with a common name and, for user certificates, a UID attribute."""
    attrs = []
    if uid is not None:
        attrs.append(x509.NameAttribute(NameOID.USER_ID, uid))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def general_names(
    hosts: Iterable[str] = (), emails: Iterable[str] = (), uris: Iterable[str] = ()
) -> list[x509.GeneralName]:
    """SubjectAltName entries: IP addresses and DNS names from hosts, emails, URIs."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    names += [x509.RFC822Name(e) for e in emails]
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    return names


def _skid(public_key: PublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signing only; a CA may also sign certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def ca_certificate(key: PrivateKey, name: str, *, days: int = 3650) -> x509.Certificate:
    """A self-signed CA certificate that may sign leaf certificates only (path length 0)."""
    now = utcnow()
    subject = subject_name(f"{name} CA")
    pub = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(_skid(pub), critical=False)
        .sign(key, _digest(key))
    )


def issue_certificate(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    public_key: PublicKey,
    subject: x509.Name,
    *,
    sans: Sequence[x509.GeneralName] = (),
    days: int = 365,
    serial: int | None = None,
    not_before: dt.datetime | None = None,
) -> x509.Certificate:
    """A leaf certificate (serverAuth + clientAuth) for `public_key`, signed by the CA."""
    key_type_of(public_key)
    start = not_before or (utcnow() - dt.timedelta(minutes=5))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(_skid(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca_key, _digest(ca_key))


def make_csr(key: PrivateKey, subject: x509.Name, sans: Sequence[x509.GeneralName] = ()):
    """A certificate signing request for `key` (the private key never leaves its owner)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(key, _digest(key))


def parse_csr(data: bytes) -> tuple[PublicKey, x509.Name, list[x509.GeneralName]]:
    """Like `parse_request`, but only a CSR: its signature proves the key's possession."""
    if b"CERTIFICATE REQUEST" not in data:
        raise CertifiedError(
            "expected a PEM certificate signing request (its signature proves you hold the key)"
        )
    return parse_request(data)


def parse_request(data: bytes) -> tuple[PublicKey, x509.Name, list[x509.GeneralName]]:
    """Public key, subject and SANs from a PEM CSR (signature checked) or certificate."""
    text = data.strip()
    try:
        if b"CERTIFICATE REQUEST" in text:
            csr = x509.load_pem_x509_csr(text)
            if not csr.is_signature_valid:
                raise CertifiedError("certificate request signature is invalid")
            obj: x509.Certificate | x509.CertificateSigningRequest = csr
        elif b"BEGIN CERTIFICATE" in text:
            obj = x509.load_pem_x509_certificate(text)
        else:
            raise CertifiedError("expected a PEM certificate or certificate request")
    except ValueError as exc:
        raise CertifiedError(f"malformed certificate or request: {exc}") from None
    try:
        sans = list(obj.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    pub = obj.public_key()
    key_type_of(pub)
    return pub, obj.subject, sans


def identity_of(cert: x509.Certificate) -> str:
    """`uid:<login>` for user certificates, else `cn:<common name>`."""
    uids = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    if uids:
        return f"uid:{uids[0].value}"
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"cn:{cns[0].value}" if cns else f"serial:{cert.serial_number:x}"


def key_fingerprint(public_key: PublicKey) -> str:
    """SHA-256 hex of the raw public key bytes (ed25519) or uncompressed point (P-256)."""
    if key_type_of(public_key) == "ed25519":
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    return hashlib.sha256(raw).hexdigest()


def build_crl(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    revoked: Iterable[tuple[int, dt.datetime]],
    *,
    days: int = 7,
) -> x509.CertificateRevocationList:
    """An X.509 CRL signed by the CA listing (serial, revocation time) pairs."""
    now = utcnow()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=1))
        .next_update(now + dt.timedelta(days=days))
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(ca_key, _digest(ca_key))


def pem(obj) -> str:
    """PEM text of a certificate, CSR or CRL."""
    return obj.public_bytes(serialization.Encoding.PEM).decode()
