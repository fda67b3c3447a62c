"""The signer's HTTP API, served on a UNIX socket only."""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse

from certified.errors import CertifiedError

from .authority import Authority
from .ledger import Ledger, parse_serial
from .models import LedgerRow, SignRequest, SignResponse
from .peercred import PeerCred
from .policy import PolicyError
from .settings import SignerSettings

log = logging.getLogger("signer")


def _caller(request: Request) -> PeerCred:
    cred = (request.scope.get("extensions") or {}).get("peercred")
    if cred is None:
        raise HTTPException(500, "no peer credentials: the signer must be served on a UNIX socket")
    if cred.login is None:
        raise HTTPException(403, f"uid {cred.uid} has no login name on this host")
    return cred


def create_app(settings: SignerSettings) -> FastAPI:
    """The signer app: POST /sign, GET /crl, GET /certificates/{serial}."""
    authority = Authority(settings.config_dir, Ledger(settings.db_path), settings.days)
    app = FastAPI(title="signer")
    app.state.authority = authority

    @app.post("/sign", response_model=SignResponse)
    def sign(body: SignRequest, request: Request) -> SignResponse:
        cred = _caller(request)
        try:
            resp = authority.sign(body.csr, cred.login, cred.uid)
        except PolicyError as exc:
            log.warning("refused", extra={"login": cred.login, "uid": cred.uid, "reason": str(exc)})
            raise HTTPException(403, str(exc)) from None
        except CertifiedError as exc:
            raise HTTPException(400, str(exc)) from None
        log.info("signed", extra={"login": cred.login, "uid": cred.uid, "serial": resp.serial})
        return resp

    @app.get("/crl", response_class=PlainTextResponse)
    def crl() -> str:
        return authority.crl_pem()

    @app.get("/certificates/{serial}", response_model=LedgerRow)
    def status(serial: str, request: Request) -> LedgerRow:
        cred = _caller(request)
        try:
            row = authority.ledger.get(parse_serial(serial))
        except CertifiedError as exc:
            raise HTTPException(404, str(exc)) from None
        if row.uid != cred.uid and cred.uid != 0:
            raise HTTPException(404, f"no certificate with serial {serial} for {cred.login}")
        return row

    return app
