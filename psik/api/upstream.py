"""The `/v3` routes upstream psik 3's remote backend (`type: psik`) calls.

Upstream `psik` with a backend `{type: psik, attributes: {remote_url, remote_backend}}`
forwards its JobSpec here and later polls the job's history and logs:

    POST   /v3/jobs?submit=true|false  JobSpec JSON -> the job id (a JSON string)
    POST   /v3/jobs/{jobid}/start      submit a job created with submit=false
    GET    /v3/jobs/{jobid}            [{updated, jobndx, state, info}, ...]
    GET    /v3/jobs/{jobid}/logs       {"stdout.1": text, "stderr.1": text, "console": text}
    DELETE /v3/jobs/{jobid}            cancel

The same ownership, validation and callbacks as the native routes apply: a job belongs
to the mTLS identity that created it, and the spec's callback gets every transition.
Our `new` row is shown with jobndx 0, as upstream records it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from certified.asgi import client_identity

from ..errors import IllegalTransition, PsikError, SpecError
from ..jobdir import JobDir
from ..jobs import Psik
from ..models import JobSpec, JobState
from ..runas import ON_BEHALF_OF

Identity = Annotated[str, Depends(client_identity)]


class StepInfo(BaseModel):
    """One transition as upstream psik's remote backend reads it (`JobStepInfo`)."""

    updated: float
    jobndx: int
    state: JobState
    info: str


def history(job: JobDir) -> list[StepInfo]:
    """The job's transitions in upstream's shape (`new` at jobndx 0)."""
    return [
        StepInfo(
            updated=t.time.timestamp(),
            jobndx=0 if t.state is JobState.new else t.jobndx,
            state=t.state,
            info=t.info,
        )
        for t in job.transitions()
    ]


def _read_tail(path: Path, limit: int) -> str | None:
    """The last `limit` bytes of a regular file (never following a symlink), as text."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno())
        if not stat.S_ISREG(size.st_mode):
            return None
        fh.seek(max(0, size.st_size - limit))
        return fh.read().decode("utf-8", errors="replace")


def upstream_router(
    psik: Psik,
    owned: Callable[[str, str], JobDir],
    max_log_chunk: int,
    new_job: Callable[[JobSpec, str, str | None], JobDir],
) -> APIRouter:
    """The /v3 routes over this service's Psik; `owned(jobid, identity)` 404s others' jobs;
    `new_job(spec, identity, on_behalf_of)` creates one as the native route does (403 for
    whom it may not run)."""
    router = APIRouter(prefix="/v3", tags=["upstream psik 3"])

    def submit(job: JobDir) -> None:
        try:
            psik.submit(job)
        except IllegalTransition:
            raise  # 409 from the app's handler
        except PsikError as exc:
            job.note(f"submission failed: {exc}")
            raise HTTPException(502, detail=f"job {job.jobid} not submitted: {exc}") from None

    @router.post("/jobs", status_code=201)
    def create(
        spec: JobSpec,
        identity: Identity,
        submit_now: Annotated[bool, Query(alias="submit")] = True,
        on_behalf_of: Annotated[str | None, Header(alias=ON_BEHALF_OF)] = None,
    ) -> str:
        """Create (and unless submit=false, submit) a job; returns its id."""
        try:
            job = new_job(spec, identity, on_behalf_of)
        except SpecError as exc:
            err = {"type": "value_error", "loc": ["body", "backend"], "msg": str(exc)}
            raise RequestValidationError([err]) from None
        if submit_now:
            submit(job)
        return job.jobid

    @router.post("/jobs/{jobid}/start")
    def start(jobid: str, identity: Identity) -> str:
        """Submit a job created with submit=false (409 unless it is new)."""
        job = owned(jobid, identity)
        submit(job)
        return job.jobid

    @router.get("/jobs/{jobid}")
    def get(jobid: str, identity: Identity) -> list[StepInfo]:
        """Every transition of the job, oldest first."""
        return history(owned(jobid, identity))

    @router.get("/jobs/{jobid}/logs")
    def logs(jobid: str, identity: Identity) -> dict[str, str]:
        """stdout/stderr of every run and the console log (each its last max_log_chunk bytes)."""
        job = owned(jobid, identity)
        out: dict[str, str] = {}
        paths = [
            (f"{s}.{n}", job.log_path(s, n))
            for n in range(1, job.current().jobndx + 1)
            for s in ("stdout", "stderr")
        ]
        for name, path in [*paths, ("console", job.console)]:
            text = _read_tail(path, max_log_chunk)
            if text is not None:
                out[name] = text
        return out

    @router.delete("/jobs/{jobid}")
    def cancel(jobid: str, identity: Identity) -> list[StepInfo]:
        """Cancel a queued or running job (409 if it is not); returns its history."""
        job = owned(jobid, identity)
        psik.cancel(job)
        return history(job)

    return router
