"""lclstream-api settings and where they come from.

Search order (`certified.configfind`): the `--config` flag, `$LCLSTREAM_API_CONFIG`,
`$VIRTUAL_ENV/etc/lclstream-api.yaml`, `/etc/lclstream-api.yaml`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from certified.configfind import find_config


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_live_transfers: Annotated[int, Field(ge=1)] = 4
    max_producers: Annotated[int, Field(ge=1)] = 64
    max_buffers: Annotated[int, Field(ge=1)] = 8


class ApiSettings(BaseModel):
    """One file for the operator."""

    model_config = ConfigDict(extra="forbid")

    #: certified config dir of the service's identity (TLS server, client of psik-api).
    certified: Path | None = None
    listen: str = "https://127.0.0.1:4434"
    #: signer revocation list (path or URL) checked for every client certificate.
    crl: str | None = None
    #: SQLite database (WAL) of transfers, transitions and port leases.
    database: Path = Path("~/.local/share/lclstream-api/transfers.db")
    #: psik-api as this identity reaches it: a service nickname URL (pinned) or "local"
    #: for in-process psik (single-host deployments and tests).
    psik_api: str = "https://psik"
    #: submit a `uid:` owner's jobs on their behalf (`X-On-Behalf-Of`): psik-api owns the
    #: jobs to that user and must list this service's identity in `delegators`. Ignored
    #: with `psik_api: local` (in-process jobs run as the service).
    delegate: bool = True
    #: the host consumers and producers reach the buffers at, and what buffers bind.
    advertise_host: str = "127.0.0.1"
    bind_host: str = "127.0.0.1"
    #: TCP ports buffers may listen on (two per buffer), inclusive.
    port_range: tuple[int, int] = (20000, 20999)
    #: this service as the jobs' callbacks reach it (psik-api's and the buffers' identity
    #: must name it; psik-api's `psik.callback.allowed` must allow it). None: no callbacks,
    #: the reconciler alone follows the jobs.
    callback_base: str | None = "https://lclstream"
    #: certified config dir the buffer jobs sign their metrics callbacks with, as the jobs
    #: see it: psik-api's identity when jobs run as psik-api (run_as service); with run_as
    #: caller the user's own, `~/.config/certified` (`~` is the job's user's home). Its
    #: trusted services must name this service as `callback_base` does. None: no buffer
    #: metrics callbacks.
    job_identity: Path | None = None
    #: environment given to every job of a transfer (buffers and producers), e.g. the PATH
    #: on which jobs find `nngstream`, `lclstreamer` and `mpirun` when psik-api starts them
    #: through sudo or SLURM, which do not pass the service's own PATH on.
    job_environment: dict[str, str] = Field(default_factory=dict)
    #: seconds between reconciler passes and metrics reports.
    reconcile_interval: Annotated[float, Field(gt=0, le=3600)] = 5.0
    metrics_interval: Annotated[float, Field(gt=0, le=3600)] = 2.0
    #: seconds buffers get to end their stream after a cancel or failure before they are
    #: cancelled too.
    cancel_grace: Annotated[float, Field(ge=0, le=3600)] = 10.0
    limits: Limits = Field(default_factory=Limits)
    #: identities that see (and may cancel) every transfer.
    operators: list[str] = Field(default_factory=list)
    #: identities besides the operators that may scrape `GET /metrics` (e.g. the
    #: Prometheus server's certified identity, `cn:prometheus`).
    metrics_readers: list[str] = Field(default_factory=list)
    max_page: Annotated[int, Field(ge=1)] = 1000

    @model_validator(mode="after")
    def _check(self) -> ApiSettings:
        lo, hi = self.port_range
        if not 1024 <= lo <= hi <= 65535:
            raise ValueError(f"port_range {lo}-{hi}: expected 1024 <= low <= high <= 65535")
        self.database = self.database.expanduser()
        return self


def load_settings(
    flag: Path | None = None, environ: Mapping[str, str] | None = None
) -> ApiSettings:
    from psik.settings import load_model

    path, explicit = find_config(flag, "LCLSTREAM_API_CONFIG", "lclstream-api.yaml", environ)
    if path is None:
        return ApiSettings()
    return load_model(ApiSettings, path)
