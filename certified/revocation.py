"""Revocation lists that servers consult on every request.

A source is either a CRL file (PEM or DER, re-read when it changes) or
``unix:/path/to/signer.sock`` (fetched from the signer's ``GET /crl``, refreshed
every `refresh` seconds). A CRL is only believed if a trusted CA signed it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import httpx
from cryptography import x509

from .errors import CertifiedError

log = logging.getLogger("certified.revocation")


def parse_crl(data: bytes, where: str) -> x509.CertificateRevocationList:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CertifiedError(f"{where}: not a valid CRL: {exc}") from None


def revoked_serials(
    crl: x509.CertificateRevocationList, trusted: list[x509.Certificate], where: str
) -> set[tuple[str, int]]:
    """(issuer, serial) pairs from a CRL whose signature verifies against a trusted CA."""
    for ca in trusted:
        if ca.subject == crl.issuer and crl.is_signature_valid(ca.public_key()):
            issuer = crl.issuer.rfc4514_string()
            return {(issuer, r.serial_number) for r in crl}
    raise CertifiedError(f"{where}: CRL issuer {crl.issuer.rfc4514_string()} is not a trusted CA")


def fetch_signer_crl(socket_path: str, timeout: float = 5.0) -> bytes:
    """GET /crl from a signer listening on a UNIX socket."""
    transport = httpx.HTTPTransport(uds=socket_path)
    with httpx.Client(transport=transport, timeout=timeout) as client:
        resp = client.get("http://signer/crl")
        resp.raise_for_status()
        return resp.content


class RevocationList:
    """Thread-safe set of revoked (issuer, serial), kept fresh from its source."""

    def __init__(self, source: str, trusted: list[x509.Certificate], refresh: float = 10.0):
        self.source = source
        self.trusted = trusted
        self.refresh = refresh
        self._lock = threading.Lock()
        self._revoked: set[tuple[str, int]] = set()
        self._stamp: float | None = None
        self._checked = time.monotonic()
        self.reload(strict=True)
        if self.source.startswith("unix:"):
            # Network fetches never run on the request path: a daemon thread refreshes.
            threading.Thread(target=self._poll, name="crl-refresh", daemon=True).start()

    def _poll(self) -> None:
        while True:
            time.sleep(self.refresh)
            self.reload()

    def _read(self) -> tuple[bytes, float | None]:
        if self.source.startswith("unix:"):
            return fetch_signer_crl(self.source.removeprefix("unix:")), None
        path = Path(self.source)
        try:
            return path.read_bytes(), path.stat().st_mtime
        except OSError as exc:
            raise CertifiedError(f"revocation list {path}: {exc.strerror}") from None

    def reload(self, strict: bool = False) -> None:
        """Re-read the source; a failure keeps the last good list (and is logged)."""
        try:
            if not self.source.startswith("unix:"):
                mtime = Path(self.source).stat().st_mtime
                if mtime == self._stamp and not strict:
                    return
            data, stamp = self._read()
            revoked = revoked_serials(parse_crl(data, self.source), self.trusted, self.source)
        except (CertifiedError, httpx.HTTPError, OSError) as exc:
            if strict:
                raise CertifiedError(str(exc)) from None
            log.error(
                "revocation list refresh failed; keeping the previous one",
                extra={"error": str(exc)},
            )
            return
        with self._lock:
            self._revoked, self._stamp = revoked, stamp

    def is_revoked(self, issuer: str, serial: int) -> bool:
        """Membership test; a CRL file is re-checked (one stat) at most every second."""
        now = time.monotonic()
        if not self.source.startswith("unix:") and now - self._checked >= min(self.refresh, 1.0):
            self._checked = now
            self.reload()
        with self._lock:
            return (issuer, serial) in self._revoked

    def is_revoked_certificate(self, cert: x509.Certificate) -> bool:
        """`is_revoked` for a parsed certificate."""
        return self.is_revoked(cert.issuer.rfc4514_string(), cert.serial_number)
