"""The lclstream-api FastAPI app: `create_app(settings)`; serve it with certified's mTLS
server (`lclstream-api serve`)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from certified.asgi import MAX_QUERY_INT, Identity, client_identity
from certified.docs import offline_docs
from certified.metrics import add_metrics_route
from certified.webhooks import HEADER, verify
from nngstream.models import Metrics
from psik.models import Callback

from .launcher import JobLauncher, LaunchError, LocalLauncher, PsikApiLauncher
from .metrics import ApiMetrics
from .models import (
    JobSeen,
    MetricsSeen,
    Transfer,
    TransferDetail,
    TransferPage,
    TransferRequest,
    TransferState,
    TransferSummary,
    detail,
    summary,
)
from .service import LimitExceeded, NoPorts, Service
from .settings import ApiSettings
from .store import Store
from .validate import ConfigProblems, native_config
from .web import mount_web

log = logging.getLogger("lclstream_api")


def make_launcher(settings: ApiSettings) -> JobLauncher:
    """psik-api over mTLS, or in-process psik when `psik_api` is "local"."""
    if settings.psik_api == "local":
        from psik.settings import load_config

        return LocalLauncher(load_config())
    return PsikApiLauncher(settings.certified, settings.psik_api, delegate=settings.delegate)


def _identity(settings: ApiSettings) -> str:
    from certified import Certified

    try:
        return Certified(settings.certified).identity
    except Exception as exc:  # only for the start-up line
        return f"(unknown: {exc})"


def create_app(settings: ApiSettings, launcher: JobLauncher | None = None) -> FastAPI:
    store = Store(settings.database)
    metrics = ApiMetrics(store)
    service = Service(settings, launcher or make_launcher(settings), store, metrics)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        log.info(
            "lclstream-api %s as %s: psik-api %s, ports %d-%d, advertised host %s, database %s",
            settings.listen,
            _identity(settings),
            settings.psik_api,
            *settings.port_range,
            settings.advertise_host,
            settings.database,
        )
        service.start()
        try:
            yield
        finally:
            service.stop()
            store.close()

    app = FastAPI(
        title="lclstream-api", version="1", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.service = service
    offline_docs(app)
    mount_web(app, settings.operators)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    def owned(transfer_id: str, identity: str) -> Transfer:
        t = store.get(transfer_id)
        if t is None or (t.owner != identity and identity not in settings.operators):
            raise HTTPException(404, detail=f"no transfer {transfer_id}")
        return t

    add_metrics_route(app, metrics.registry, {*settings.operators, *settings.metrics_readers})

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "live": len(store.live())}

    @app.post("/transfers", status_code=201)
    def create(req: TransferRequest, identity: Identity) -> TransferDetail:
        """Validate the configuration, provision buffers and producers, return the URLs."""
        try:
            config = native_config(req.config)
        except ConfigProblems as exc:
            raise RequestValidationError(
                [
                    {"type": "value_error", "loc": ["body", "config", *loc], "msg": msg}
                    for loc, msg in exc.problems
                ]
            ) from None
        try:
            t = service.create(identity, req, config)
        except LimitExceeded as exc:
            raise HTTPException(422, detail=str(exc)) from None
        except OverflowError as exc:
            raise HTTPException(429, detail=str(exc)) from None
        except NoPorts as exc:
            raise HTTPException(503, detail=str(exc)) from None
        return detail(t)

    @app.get("/transfers")
    def list_transfers(
        identity: Identity,
        state: TransferState | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_QUERY_INT)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_QUERY_INT)] = 0,
    ) -> TransferPage:
        """The caller's transfers (an operator's: everyone's), oldest first."""
        owner = None if identity in settings.operators else identity
        total, items = store.page(owner, state, offset, min(limit, settings.max_page))
        return TransferPage(total=total, offset=offset, transfers=[summary(t) for t in items])

    @app.get("/transfers/{transfer_id}")
    def get_transfer(transfer_id: str, identity: Identity) -> TransferDetail:
        return detail(owned(transfer_id, identity))

    @app.delete("/transfers/{transfer_id}")
    def cancel(transfer_id: str, identity: Identity) -> TransferSummary:
        """Cancel every job (idempotent: a finished transfer is returned as is)."""
        owned(transfer_id, identity)
        t = service.cancel(transfer_id)
        assert t is not None
        return summary(t)

    @app.get("/transfers/{transfer_id}/logs")
    def log_index(transfer_id: str, identity: Identity) -> dict[str, dict]:
        t = owned(transfer_id, identity)
        return {
            role: {"jobid": j.jobid, "streams": ["stdout", "stderr"]} for role, j in t.jobs.items()
        }

    @app.get("/transfers/{transfer_id}/logs/{role}/{stream}")
    def job_log(
        transfer_id: str,
        role: str,
        stream: Literal["stdout", "stderr"],
        identity: Identity,
        offset: Annotated[int, Query(ge=0, le=MAX_QUERY_INT)] = 0,
        tail: Annotated[int | None, Query(ge=1, le=1 << 24)] = None,
    ) -> Response:
        """A job's log from `offset` (or its last `tail` bytes), read through psik-api."""
        t = owned(transfer_id, identity)
        if role not in t.jobs:
            raise HTTPException(404, detail=f"transfer {transfer_id} has no job {role!r}")
        jobid = t.jobs[role].jobid
        try:
            data, nxt = service.launcher.log(jobid, stream, offset)
            if tail is not None:
                chunks = [data]
                while data:
                    data, nxt = service.launcher.log(jobid, stream, nxt)
                    chunks.append(data)
                data = b"".join(chunks)[-tail:]
        except LaunchError as exc:
            raise HTTPException(502, detail=str(exc)) from None
        return Response(
            data, media_type="application/octet-stream", headers={"x-next-offset": str(nxt)}
        )

    @app.post("/callbacks/{transfer_id}/{role}")
    async def callback(transfer_id: str, role: str, request: Request) -> dict:
        """A psik job callback or an nngstream metrics report, signed with the transfer's
        secret (403 on a bad signature, nothing changes)."""
        client_identity(request)
        t = store.get(transfer_id)
        if t is None or role not in t.roles:
            metrics.callback_error("unknown_transfer")
            raise HTTPException(404, detail=f"no transfer {transfer_id} role {role}")
        body = await request.body()
        if not verify(t.secret, body, request.headers.get(HEADER)):
            metrics.callback_error("bad_signature")
            raise HTTPException(403, detail=f"bad or missing {HEADER}")
        try:
            doc = json.loads(body)
            if isinstance(doc, dict) and "jobid" in doc:
                cb = Callback.model_validate(doc)
                ev = JobSeen(
                    role=role,
                    jobid=cb.jobid,
                    state=cb.state.value,
                    info=cb.info,
                    source="callback",
                    time=time.time(),
                )
            else:
                ev = MetricsSeen(role=role, metrics=Metrics.model_validate(doc), time=time.time())
        except (ValueError, ValidationError) as exc:
            metrics.callback_error("invalid_body")
            raise HTTPException(
                422, detail=f"not a job callback or metrics report: {exc}"
            ) from None
        await run_in_threadpool(service.apply, transfer_id, ev)
        return {"ok": True}

    return app
