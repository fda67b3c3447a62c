"""The signing authority: turns a caller's CSR into a `uid:<login>` certificate."""

from __future__ import annotations

from pathlib import Path

from certified.keys import load_certificate, load_private_key
from certified.layout import Layout
from certified.pki import build_crl, issue_certificate, key_fingerprint, parse_csr, pem

from .ledger import Ledger
from .models import LedgerRow, SignResponse
from .policy import user_subject


class Authority:
    """Signs CSRs with the CA of a certified config dir and records each in the ledger."""

    def __init__(self, config_dir: Path, ledger: Ledger, days: int = 30) -> None:
        lay = Layout(Path(config_dir))
        self.ca_key = load_private_key(lay.ca_key)
        self.ca_cert = load_certificate(lay.ca_cert)
        self.ledger = ledger
        self.days = days

    def sign(self, csr_pem: str, login: str, uid: int) -> SignResponse:
        pub, requested, sans = parse_csr(csr_pem.encode())
        subject = user_subject(requested, sans, login)
        cert = issue_certificate(self.ca_key, self.ca_cert, pub, subject, days=self.days)
        serial = f"{cert.serial_number:x}"
        self.ledger.record(
            LedgerRow(
                serial=serial,
                login=login,
                uid=uid,
                key_fingerprint=key_fingerprint(pub),
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
            )
        )
        return SignResponse(
            cert=pem(cert),
            ca_cert=pem(self.ca_cert),
            serial=serial,
            not_after=cert.not_valid_after_utc,
        )

    def crl_pem(self) -> str:
        """The current CRL, signed by the signer's CA."""
        return pem(build_crl(self.ca_key, self.ca_cert, self.ledger.revoked()))
