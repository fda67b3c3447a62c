"""Exchange formats for certificates, requests and introductions: PEM and upstream's.

Upstream certified (ORNL/certified 1.x) passes certificates as one line of url-safe
base64 DER (alphabet `-_`): `get-ident` prints the identity certificate that way,
`get-signer` prints `{"ca_cert": <b64>}`, `introduce` prints `{"signed_cert": <b64>,
"ca_cert": <b64>}`, and a trusted service is a YAML file `{url, cert: <b64>, auths}`.
Ours speaks PEM. Every reader here accepts both; writers produce either. Pure: bytes in,
objects or text out.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Literal

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .errors import CertifiedError

Format = Literal["pem", "upstream"]
Request = x509.Certificate | x509.CertificateSigningRequest


def to_b64(obj: Request) -> str:
    """url-safe base64 of the DER encoding (upstream's one-line form)."""
    return base64.b64encode(obj.public_bytes(serialization.Encoding.DER), altchars=b"-_").decode()


def to_pem(obj: Request) -> str:
    return obj.public_bytes(serialization.Encoding.PEM).decode()


def encode(obj: Request, fmt: Format) -> str:
    """The certificate or request in `fmt`."""
    return to_b64(obj) if fmt == "upstream" else to_pem(obj)


def _der(text: str) -> bytes | None:
    """DER bytes of a base64 line (url-safe or standard alphabet), None if it is not one."""
    compact = "".join(text.split())
    if not compact:
        return None
    for alt in (b"-_", None):
        try:
            return base64.b64decode(compact, altchars=alt, validate=True)
        except (binascii.Error, ValueError):
            continue
    return None


def _json_field(data: bytes, keys: tuple[str, ...]) -> str | None:
    """The first of `keys` in a JSON object (upstream's get-signer/introduce output)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    for key in keys:
        if isinstance(doc.get(key), str):
            return doc[key]
    return None


def read_certificate(
    data: bytes, where: str, keys: tuple[str, ...] = ("ca_cert",)
) -> x509.Certificate:
    """A certificate from PEM, one line of (url-safe) base64 DER, or a JSON document
    holding one of those under one of `keys` (upstream's `get-signer` output)."""
    text = data.strip()
    inner = _json_field(text, keys) if text.startswith(b"{") else None
    if inner is not None:
        text = inner.strip().encode()
    try:
        if b"-----BEGIN CERTIFICATE-----" in text:
            return x509.load_pem_x509_certificate(text)
        der = _der(text.decode("ascii", errors="replace"))
        if der is not None:
            return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertifiedError(f"{where}: not a valid certificate: {exc}") from None
    raise CertifiedError(
        f"{where}: not a certificate (expected PEM, url-safe base64 DER, or JSON with "
        f"{' or '.join(repr(k) for k in keys)})"
    )


def read_request(data: bytes, where: str) -> Request:
    """What `introduce` signs: a PEM CSR or certificate, or upstream's base64 DER form of
    either (upstream `get-ident` prints the identity certificate so)."""
    text = data.strip()
    inner = _json_field(text, ("cert", "signed_cert")) if text.startswith(b"{") else None
    if inner is not None:
        text = inner.strip().encode()
    try:
        if b"CERTIFICATE REQUEST-----" in text:
            return x509.load_pem_x509_csr(text)
        if b"-----BEGIN CERTIFICATE-----" in text:
            return x509.load_pem_x509_certificate(text)
        der = _der(text.decode("ascii", errors="replace"))
        if der is not None:
            try:
                return x509.load_der_x509_certificate(der)
            except ValueError:
                return x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise CertifiedError(f"{where}: malformed certificate or request: {exc}") from None
    raise CertifiedError(
        f"{where}: expected a certificate or certificate request (PEM or url-safe base64 DER)"
    )


def introduction(signed: x509.Certificate, ca: x509.Certificate, fmt: Format) -> str:
    """`introduce`'s JSON: {signed_cert, ca_cert} in `fmt` (upstream: what `add-intro` reads)."""
    return json.dumps({"signed_cert": encode(signed, fmt), "ca_cert": encode(ca, fmt)}, indent=2)


def signer_document(ca: x509.Certificate, fmt: Format) -> str:
    """`get-signer`'s output: PEM, or upstream's `{"ca_cert": <b64>}`."""
    return json.dumps({"ca_cert": to_b64(ca)}) if fmt == "upstream" else to_pem(ca)


def read_upstream_service(data: bytes, where: str) -> tuple[str, x509.Certificate]:
    """(url, pinned certificate) of an upstream `known_servers/NAME.yaml` file."""
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise CertifiedError(f"{where}: not YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("url"), str):
        raise CertifiedError(f"{where}: not an upstream service file (needs url and cert)")
    if not isinstance(doc.get("cert"), str):
        raise CertifiedError(f"{where}: the service has no pinned cert (cert: <base64 DER>)")
    return doc["url"], read_certificate(doc["cert"].encode(), f"{where}: cert")
