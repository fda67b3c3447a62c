"""The psik REST API: jobs owned by the mTLS client identity that created them."""

from __future__ import annotations

import logging
import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel

from certified.asgi import client_identity

from ..errors import BackendError, IllegalTransition, JobNotFound, PsikError, SpecError
from ..jobdir import JobDir
from ..jobs import Psik
from ..models import JobSpec, JobState, Transition
from .settings import ApiSettings, load_settings
from .upstream import upstream_router

log = logging.getLogger("psik.api")

Identity = Annotated[str, Depends(client_identity)]


class JobSummary(BaseModel):
    jobid: str
    name: str
    state: JobState
    jobndx: int
    updated: datetime


class JobPage(BaseModel):
    total: int
    offset: int
    jobs: list[JobSummary]


class JobDetail(JobSummary):
    spec: JobSpec
    transitions: list[Transition]


class BackendInfo(BaseModel):
    name: str
    type: str


class FileEntry(BaseModel):
    name: str
    type: Literal["file", "directory", "symlink", "other"]
    size: int


def _summary(job: JobDir) -> JobSummary:
    cur = job.current()
    return JobSummary(
        jobid=job.jobid,
        name=job.spec().name,
        state=cur.state,
        jobndx=cur.jobndx,
        updated=cur.time,
    )


def _safe_target(root: Path, rel: str) -> Path:
    """`rel` inside `root`, refusing `..`, absolute paths and symlinks that leave `root`."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if rel.startswith("/") or "\\" in rel or "\0" in rel or any(p == ".." for p in parts):
        raise HTTPException(400, detail="path must be relative and stay inside the job directory")
    base = root.resolve()
    target = base.joinpath(*parts).resolve()
    if target != base and not target.is_relative_to(base):
        raise HTTPException(404, detail=f"no file {rel!r}")
    if not target.exists():
        raise HTTPException(404, detail=f"no file {rel!r}")
    return target


def _entry(path: Path) -> FileEntry:
    st = path.lstat()
    if path.is_symlink():
        kind = "symlink"
    elif path.is_dir():
        kind = "directory"
    elif path.is_file():
        kind = "file"
    else:
        kind = "other"
    return FileEntry(name=path.name, type=kind, size=st.st_size)


def create_app(settings: ApiSettings) -> FastAPI:
    """The FastAPI app for these settings (serve it with certified's mTLS server)."""
    psik = Psik(settings.job_config())
    app = FastAPI(title="psik-api", version="1")
    app.state.settings = settings
    app.state.psik = psik

    @app.exception_handler(JobNotFound)
    async def _not_found(_req: Request, exc: JobNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(IllegalTransition)
    async def _conflict(_req: Request, exc: IllegalTransition) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(BackendError)
    async def _backend(_req: Request, exc: BackendError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=502)

    def owned(jobid: str, identity: str) -> JobDir:
        """The job if `identity` owns it; 404 otherwise (others' jobs do not exist)."""
        try:
            job = psik.store.get(jobid)
        except JobNotFound:
            raise HTTPException(404, detail=f"no job {jobid}") from None
        if job.owner() != identity:
            raise HTTPException(404, detail=f"no job {jobid}")
        return job

    @app.post("/jobs", status_code=201)
    def create_job(spec: JobSpec, identity: Identity) -> JobSummary:
        """Validate, create and submit a job; the caller owns it."""
        try:
            job = psik.create(spec, owner=identity)
        except SpecError as exc:
            err = {"type": "value_error", "loc": ["body", "backend"], "msg": str(exc)}
            raise RequestValidationError([err]) from None
        log.info("job %s created by %s", job.jobid, identity)
        try:
            psik.submit(job)
        except PsikError as exc:
            job.note(f"submission failed: {exc}")
            raise HTTPException(502, detail=f"job {job.jobid} not submitted: {exc}") from None
        return _summary(job)

    @app.get("/jobs")
    def list_jobs(
        identity: Identity,
        state: JobState | None = None,
        limit: Annotated[int, Query(ge=1)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> JobPage:
        """The caller's jobs, oldest first, optionally only those in `state`."""
        mine = []
        for job in psik.store.list():
            if job.owner() != identity:
                continue
            summary = _summary(job)
            if state is None or summary.state is state:
                mine.append(summary)
        limit = min(limit, settings.max_page)
        return JobPage(total=len(mine), offset=offset, jobs=mine[offset : offset + limit])

    @app.get("/jobs/{jobid}")
    def get_job(jobid: str, identity: Identity) -> JobDetail:
        """Spec (without cb_secret, cb_headers values hidden) and every transition."""
        job = owned(jobid, identity)
        spec = job.spec()
        hidden = dict.fromkeys(spec.cb_headers, "(hidden)")  # they may carry credentials
        spec = spec.model_copy(update={"cb_secret": None, "cb_headers": hidden})
        return JobDetail(**_summary(job).model_dump(), spec=spec, transitions=job.transitions())

    @app.delete("/jobs/{jobid}")
    def cancel_job(jobid: str, identity: Identity) -> JobSummary:
        """Cancel a queued or running job (409 if it is not)."""
        job = owned(jobid, identity)
        psik.cancel(job)
        log.info("job %s canceled by %s", jobid, identity)
        return _summary(job)

    @app.post("/jobs/{jobid}/restart")
    def restart_job(jobid: str, identity: Identity) -> JobSummary:
        """Resubmit a finished job as its next run (409 if it is not finished)."""
        job = owned(jobid, identity)
        psik.restart(job)
        return _summary(job)

    @app.get("/jobs/{jobid}/logs/{stream}")
    def get_log(
        jobid: str,
        stream: Literal["stdout", "stderr", "console"],
        identity: Identity,
        offset: Annotated[int, Query(ge=0)] = 0,
        jobndx: Annotated[int | None, Query(ge=1)] = None,
    ) -> Response:
        """Log bytes from `offset`; headers give the next offset, the run and its state."""
        job = owned(jobid, identity)
        cur = job.current()
        ndx = jobndx or cur.jobndx
        path = job.console if stream == "console" else job.log_path(stream, ndx)
        data = b""
        try:  # O_NOFOLLOW: a job cannot swap its log for a symlink to someone else's file
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            pass
        except OSError:
            raise HTTPException(404, detail=f"{stream} log is not a regular file") from None
        else:
            with os.fdopen(fd, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    raise HTTPException(404, detail=f"{stream} log is not a regular file")
                fh.seek(offset)
                data = fh.read(settings.max_log_chunk)
        state = cur.state.value if ndx == cur.jobndx else "final"
        return Response(
            content=data,
            media_type="application/octet-stream",
            headers={
                "x-psik-next-offset": str(offset + len(data)),
                "x-psik-jobndx": str(ndx),
                "x-psik-state": state,
            },
        )

    @app.get("/jobs/{jobid}/files")
    def list_root(jobid: str, identity: Identity) -> list[FileEntry]:
        """The job's working directory listing."""
        job = owned(jobid, identity)
        root = job.files_root
        return sorted((_entry(p) for p in root.iterdir()), key=lambda e: e.name)

    @app.get("/jobs/{jobid}/files/{path:path}", response_model=None)
    def get_file(jobid: str, path: str, identity: Identity) -> FileResponse | list[FileEntry]:
        """A file (or directory listing) inside the job's working directory."""
        job = owned(jobid, identity)
        target = _safe_target(job.files_root, path)
        if target.is_dir():
            return sorted((_entry(p) for p in target.iterdir()), key=lambda e: e.name)
        if not target.is_file():
            raise HTTPException(404, detail=f"{path!r} is not a regular file")
        return FileResponse(target, media_type="application/octet-stream")

    app.include_router(upstream_router(psik, owned, settings.max_log_chunk))

    @app.get("/backends")
    def backends(identity: Identity) -> list[BackendInfo]:
        """Backend names and types (their queue/account details stay private)."""
        return [BackendInfo(name=n, type=b.type) for n, b in settings.psik.backends.items()]

    return app


def app_from_environment():
    """Zero-argument factory for `certified serve psik.api.app:app_from_environment --factory`.

    Reads settings by the search order ($PSIK_API_CONFIG, $VIRTUAL_ENV/etc/psik-api.yaml,
    /etc/psik-api.yaml).
    """
    return create_app(load_settings(None, os.environ))
