"""Signer contracts: the sign request/response and a ledger row."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict


class SignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    csr: str  # PEM certificate signing request


class SignResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cert: str  # PEM, the user's certificate
    ca_cert: str  # PEM, the signer's CA
    serial: str  # hex
    not_after: dt.datetime


class LedgerRow(BaseModel):
    """One signature the signer made."""

    model_config = ConfigDict(extra="forbid")

    serial: str
    login: str
    uid: int
    key_fingerprint: str
    not_before: dt.datetime
    not_after: dt.datetime
    revoked_at: dt.datetime | None = None

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.not_after < dt.datetime.now(dt.UTC):
            return "expired"
        return "valid"
