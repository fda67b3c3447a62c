"""The psik REST API: jobs owned by the mTLS client identity that created them."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response

from certified.asgi import MAX_QUERY_INT, Identity
from certified.docs import offline_docs
from certified.metrics import add_metrics_route
from certified.webhooks import Destinations

from ..errors import BackendError, IllegalTransition, JobNotFound, PsikError, SpecError
from ..index import JobIndex
from ..jobdir import JOURNAL, JobDir
from ..jobs import Psik
from ..models import JobSpec, JobState
from ..outbox import Dispatcher, failed, pending, sender_for
from ..runas import (
    ON_BEHALF_OF,
    Principal,
    Refused,
    RunAsPolicy,
    folder_login,
    resolve,
    uid_of,
)
from .metrics import api_registry
from .models import (
    BackendInfo,
    CallbackStatus,
    ErrorDetail,
    FileEntry,
    JobDetail,
    JobPage,
    JobSummary,
)
from .settings import ApiSettings, load_settings
from .upstream import upstream_router

log = logging.getLogger("psik.api")


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


#: the error statuses each kind of route can answer, declared in the OpenAPI document.
_ERR = {"model": ErrorDetail}
JOB_ERRORS: dict[int | str, dict] = {404: _ERR}
CREATE_ERRORS: dict[int | str, dict] = {400: _ERR, 403: _ERR, 502: _ERR}
STATE_ERRORS: dict[int | str, dict] = {404: _ERR, 409: _ERR, 502: _ERR}
FILE_ERRORS: dict[int | str, dict] = {400: _ERR, 403: _ERR, 404: _ERR}
LOG_ERRORS: dict[int | str, dict] = {403: _ERR, 404: _ERR, 416: _ERR}


def _plain_errors(errors: list[dict]) -> list[dict]:
    """Validation errors without the offending input (it may be NaN, inf or huge)."""
    return [
        {"type": e.get("type", "value_error"), "loc": list(e.get("loc", ())), "msg": e["msg"]}
        for e in errors
    ]


class Service:
    """What one psik-api process owns: the job manager, the listing index, the callback
    workers and the reconciler thread."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        config = settings.job_config()
        self.dispatcher = Dispatcher(
            sender_for(config), settings.callback_workers, settings.callback_queue
        )
        self.caller_mode = settings.run_as == "caller"
        sudo = settings.sudo if self.caller_mode else None
        self.psik = Psik(config, notify=self.dispatcher.enqueue, sudo=sudo)
        self.policy = RunAsPolicy(
            settings.run_as, settings.min_uid, tuple(settings.deny_logins),
            tuple(settings.delegators),
        )  # fmt: skip
        # a row written elsewhere (a wrapper, the CLI) may leave callbacks pending
        self.index = JobIndex(self.psik.store, on_change=self._changed, owner_of=self.owner_of)
        self.destinations = Destinations(config.callback.allowed)
        self._stop = threading.Event()
        self._reconciler: threading.Thread | None = None

    def _changed(self, jobid: str) -> None:
        job = JobDir(self.psik.store.prefix / jobid)
        if job.exists():
            self.dispatcher.enqueue(job)

    def owner_of(self, job: JobDir) -> str | None:
        """The job's owner as recorded; with run_as caller only if the folder belongs to
        that user (a job's user can rewrite the record, not the folder's owner)."""
        owner = job.owner()
        if not self.caller_mode or owner is None:
            return owner
        return owner if owner == f"uid:{folder_login(job.base)}" else None

    def delegated(self, job: JobDir, identity: str) -> bool:
        """Whether `identity` is a (still listed) delegator that submitted this job: it
        may follow and cancel what it started for a user (not list the user's jobs)."""
        return identity in self.policy.delegators and job.delegated_by() == identity

    def principal(self, identity: str, on_behalf_of: str | None) -> Principal:
        """Who a job from `identity` belongs to and runs as; 403 with the reason if none."""
        try:
            return resolve(identity, on_behalf_of, self.policy, uid_of)
        except Refused as exc:
            log.warning("job refused for %s: %s", identity, exc)
            raise HTTPException(403, detail=str(exc)) from None

    def prepare_prefix(self) -> None:
        """run_as caller: users create their job folders in the prefix (sticky, not
        listable, setgid to the service's group) and append to its journal (not readable)."""
        prefix = self.psik.store.prefix
        prefix.mkdir(parents=True, exist_ok=True)
        prefix.chmod(0o3733)
        journal = prefix / JOURNAL
        journal.touch()
        journal.chmod(0o622)

    def start(self) -> None:
        """Index every job folder, resume pending callbacks, start the reconciler."""
        if self.caller_mode:
            if os.geteuid() == 0:
                log.warning("run_as caller, but psik-api runs as root: run it as its own account")
            self.prepare_prefix()
        count = self.index.rebuild()
        resumed = 0
        for job in self.psik.store.list():
            with contextlib.suppress(OSError, PsikError, ValueError):
                if pending(job):
                    self.dispatcher.enqueue(job)
                    resumed += 1
        log.info("indexed %d jobs; resumed callbacks of %d", count, resumed)
        self._reconciler = threading.Thread(target=self._reconcile, name="reconciler", daemon=True)
        self._reconciler.start()

    def stop(self) -> None:
        self._stop.set()
        if self._reconciler is not None:
            self._reconciler.join(10)
        self.dispatcher.close(timeout=self.settings.shutdown_grace)

    def _reconcile(self) -> None:
        while not self._stop.wait(self.settings.reconcile_interval):
            self.reconcile_once()

    def reconcile_once(self) -> None:
        """Close runs whose scheduler job is gone; retry callbacks the queue deferred;
        pick up rows other processes wrote (through the index's journal)."""
        self.dispatcher.retry_deferred()
        unfinished = self.index.unfinished()  # also applies the journal
        self.index.reread(unfinished)
        for jobid in unfinished:
            try:
                tr = self.psik.reconcile(self.psik.store.get(jobid))
            except (OSError, PsikError, ValueError) as exc:
                log.warning("reconciling job %s: %s", jobid, exc)
                continue
            if tr is not None:
                log.warning("job %s run %d failed: %s", jobid, tr.jobndx, tr.info)


def create_app(settings: ApiSettings) -> FastAPI:
    """The FastAPI app for these settings (serve it with certified's mTLS server)."""
    service = Service(settings)
    psik = service.psik

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="psik-api", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    offline_docs(app)
    app.state.settings = settings
    app.state.service = service
    app.state.psik = psik

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _plain_errors(list(exc.errors()))}, status_code=422)

    @app.exception_handler(JobNotFound)
    async def _not_found(_req: Request, exc: JobNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(IllegalTransition)
    async def _conflict(_req: Request, exc: IllegalTransition) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(PermissionError)
    async def _unreadable(_req: Request, exc: PermissionError) -> JSONResponse:
        # run_as caller: a job's user can make their files private, even from psik-api
        name = Path(exc.filename).name if exc.filename else "a file"
        return JSONResponse({"detail": f"{name}: not readable by psik-api"}, status_code=403)

    @app.exception_handler(BackendError)
    async def _backend(_req: Request, exc: BackendError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=502)

    def owned(jobid: str, identity: str) -> JobDir:
        """The job if `identity` owns it or delegated it; 404 otherwise (others' jobs do
        not exist)."""
        try:
            job = psik.store.get(jobid)
        except (JobNotFound, PermissionError):
            raise HTTPException(404, detail=f"no job {jobid}") from None
        if service.owner_of(job) != identity and not service.delegated(job, identity):
            raise HTTPException(404, detail=f"no job {jobid}")
        return job

    def invalid(field: str, msg: str) -> RequestValidationError:
        return RequestValidationError([{"type": "value_error", "loc": ["body", field], "msg": msg}])

    def create_as(spec: JobSpec, who: Principal) -> JobDir:
        """Create the job for `who` (as their login with run_as caller); SpecError for an
        unknown backend, 502 if the folder cannot be created."""
        try:
            job = psik.create(spec, owner=who.owner, delegated_by=who.delegated_by, login=who.login)
        except BackendError as exc:
            raise HTTPException(502, detail=str(exc)) from None
        by = f" by {who.delegated_by}" if who.delegated_by else ""
        as_ = f" as {who.login}" if who.login else ""
        log.info("job %s created for %s%s%s", job.jobid, who.owner, by, as_)
        return job

    def new_job(spec: JobSpec, identity: str, on_behalf_of: str | None) -> JobDir:
        """Create a job for whom `identity` may run it (403 otherwise)."""
        return create_as(spec, service.principal(identity, on_behalf_of))

    @app.post("/jobs", status_code=201, responses=CREATE_ERRORS)
    def create_job(
        spec: JobSpec,
        identity: Identity,
        on_behalf_of: Annotated[str | None, Header(alias=ON_BEHALF_OF)] = None,
    ) -> JobSummary:
        """Validate, create and submit a job; the caller (or, from a delegator, the user
        named in X-On-Behalf-Of) owns it. Callbacks are sent later, in order, by the
        service's workers: this never waits on a receiver."""
        who = service.principal(identity, on_behalf_of)  # 403 before looking at the spec
        if spec.callback is not None and not service.destinations.allows(spec.callback):
            allowed = ", ".join(service.destinations.allowed or []) or "none"
            raise invalid("callback", f"destination not allowed by the operator ({allowed})")
        try:
            job = create_as(spec, who)
        except SpecError as exc:
            raise invalid("backend", str(exc)) from None
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
        limit: Annotated[int, Query(ge=1, le=MAX_QUERY_INT)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_QUERY_INT)] = 0,
    ) -> JobPage:
        """The caller's jobs, oldest first, optionally only those in `state`."""
        limit = min(limit, settings.max_page)
        total, entries = service.index.page(identity, state, offset, limit)
        jobs = [
            JobSummary(
                jobid=e.jobid, name=e.name, state=e.state, jobndx=e.jobndx, updated=e.updated
            )
            for e in entries
        ]
        return JobPage(total=total, offset=offset, jobs=jobs)

    @app.get("/jobs/{jobid}", responses=JOB_ERRORS)
    def get_job(jobid: str, identity: Identity) -> JobDetail:
        """Spec (without cb_secret, cb_headers values hidden), transitions, callback delivery."""
        job = owned(jobid, identity)
        spec = job.spec()
        hidden = dict.fromkeys(spec.cb_headers, "(hidden)")  # they may carry credentials
        spec = spec.model_copy(update={"cb_secret": None, "cb_headers": hidden})
        callbacks = CallbackStatus(pending=pending(job), failed=failed(job))
        return JobDetail(
            **_summary(job).model_dump(),
            spec=spec,
            transitions=job.transitions(),
            callbacks=callbacks,
            run_as=folder_login(job.base) if service.caller_mode else None,
            delegated_by=job.delegated_by(),
        )

    @app.delete("/jobs/{jobid}", responses=STATE_ERRORS)
    def cancel_job(jobid: str, identity: Identity) -> JobSummary:
        """Cancel a queued or running job (409 if it is not)."""
        job = owned(jobid, identity)
        psik.cancel(job)
        log.info("job %s canceled by %s", jobid, identity)
        return _summary(job)

    @app.post("/jobs/{jobid}/restart", responses=STATE_ERRORS)
    def restart_job(jobid: str, identity: Identity) -> JobSummary:
        """Resubmit a finished job as its next run (409 if it is not finished)."""
        job = owned(jobid, identity)
        psik.restart(job)
        return _summary(job)

    @app.get(
        "/jobs/{jobid}/logs/{stream}",
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}, **LOG_ERRORS},
    )
    def get_log(
        jobid: str,
        stream: Literal["stdout", "stderr", "console"],
        identity: Identity,
        offset: Annotated[int, Query(ge=0, le=MAX_QUERY_INT)] = 0,
        jobndx: Annotated[int | None, Query(ge=1, le=MAX_QUERY_INT)] = None,
    ) -> Response:
        """Log bytes from `offset` (416 beyond the end); headers give the next offset,
        the run and its state."""
        job = owned(jobid, identity)
        cur = job.current()
        ndx = jobndx or cur.jobndx
        if ndx > cur.jobndx:
            raise HTTPException(404, detail=f"job {jobid} has no run {ndx} (latest {cur.jobndx})")
        path = job.console if stream == "console" else job.log_path(stream, ndx)
        data = b""
        try:  # O_NOFOLLOW: a job cannot swap its log for a symlink to someone else's file
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            size = 0
        except PermissionError:
            raise HTTPException(403, detail=f"{stream} log is not readable by psik-api") from None
        except OSError:
            raise HTTPException(404, detail=f"{stream} log is not a regular file") from None
        else:
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise HTTPException(404, detail=f"{stream} log is not a regular file")
                size = st.st_size
                if offset <= size:
                    fh.seek(offset)
                    data = fh.read(settings.max_log_chunk)
        if offset > size:
            raise HTTPException(416, detail=f"offset {offset} is beyond the log's {size} bytes")
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

    @app.get("/jobs/{jobid}/files", responses=JOB_ERRORS)
    def list_root(jobid: str, identity: Identity) -> list[FileEntry]:
        """The job's working directory listing."""
        job = owned(jobid, identity)
        root = job.files_root
        return sorted((_entry(p) for p in root.iterdir()), key=lambda e: e.name)

    @app.get(
        "/jobs/{jobid}/files/{path:path}",
        response_model=None,
        responses={200: {"content": {"application/octet-stream": {}}}, **FILE_ERRORS},
    )
    def get_file(jobid: str, path: str, identity: Identity) -> FileResponse | list[FileEntry]:
        """A file (or directory listing) inside the job's working directory."""
        job = owned(jobid, identity)
        target = _safe_target(job.files_root, path)
        if target.is_dir():
            return sorted((_entry(p) for p in target.iterdir()), key=lambda e: e.name)
        if not target.is_file():
            raise HTTPException(404, detail=f"{path!r} is not a regular file")
        if not os.access(target, os.R_OK):
            raise HTTPException(403, detail=f"{path!r} is not readable by psik-api")
        return FileResponse(target, media_type="application/octet-stream")

    app.include_router(upstream_router(psik, owned, settings.max_log_chunk, new_job))
    add_metrics_route(
        app, api_registry(service.index, service.dispatcher), frozenset(settings.metrics_readers)
    )

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
