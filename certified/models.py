"""Pydantic models: the suite's strict base, the trusted-service list entries and what
`certified list` reports."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Base of the suite's contract models: unknown keys are errors (`extra="forbid"`)."""

    model_config = ConfigDict(extra="forbid")


class ServiceEntry(Strict):
    """A trusted service: nickname -> base URL + the pinned certificate (PEM)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    url: str = Field(pattern=r"^https://[^/\s]+(/.*)?$")
    cert: str


class TrustItem(Strict):
    """One line of `certified list`."""

    kind: str  # "identity" | "ca" | "client" | "service"
    name: str
    subject: str
    url: str | None = None
    not_after: dt.datetime


class Signed(Strict):
    """Output of `certified introduce`."""

    signed_cert: str
    ca_cert: str

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.signed_cert.encode())

    def ca(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca_cert.encode())
