"""psik-api settings and where they come from.

Search order: the `--config` flag, `$PSIK_API_CONFIG`, `$VIRTUAL_ENV/etc/psik-api.yaml`,
`/etc/psik-api.yaml`; with none of them, the defaults below.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from certified.configfind import find_config

from ..errors import SpecError
from ..models import Config
from ..settings import load_model


class ApiSettings(BaseModel):
    """One file for the operator: the psik config plus how the service listens."""

    model_config = ConfigDict(extra="forbid")

    #: job prefix, backends, callback policy (the same shape as psik.yaml).
    psik: Config = Field(default_factory=Config)
    #: certified config dir of the service's identity (TLS server and callback client).
    certified: Path | None = None
    listen: str = "https://127.0.0.1:4433"
    #: signer revocation list (path or URL) checked for every client certificate.
    crl: str | None = None
    #: most bytes one log request returns.
    max_log_chunk: Annotated[int, Field(ge=1024)] = 1 << 20
    max_page: Annotated[int, Field(ge=1)] = 1000
    #: threads delivering job callbacks, and how many jobs may wait for one.
    callback_workers: Annotated[int, Field(ge=1, le=256)] = 4
    callback_queue: Annotated[int, Field(ge=1)] = 10000
    #: seconds between reconciler passes (closing runs whose wrapper or SLURM job is gone).
    reconcile_interval: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 5.0
    #: seconds shutdown waits for callback workers (what is left stays pending on disk).
    shutdown_grace: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)] = 10.0

    #: whose UNIX account jobs run under: the service's own (`service`, a single-user
    #: deployment) or the caller's login (`caller`, a shared deployment; see docs/operators.md).
    run_as: Literal["service", "caller"] = "service"
    #: run_as caller: the lowest uid a job may run as, and logins never run as.
    min_uid: Annotated[int, Field(ge=1)] = 1000
    deny_logins: list[str] = Field(default_factory=lambda: ["root"])
    #: identities (e.g. `cn:lclstream-api`) that may submit for a user with X-On-Behalf-Of.
    delegators: list[str] = Field(default_factory=list)
    #: identities that may scrape `GET /metrics` (e.g. `cn:prometheus`); none by default.
    metrics_readers: list[str] = Field(default_factory=list)
    #: the sudo that runs the job steps as the caller (run_as caller).
    sudo: str = "sudo"

    @field_validator("delegators", "metrics_readers")
    @classmethod
    def _identities(cls, value: list[str]) -> list[str]:
        for ident in value:
            if not ident.startswith(("cn:", "uid:")) or len(ident.split(":", 1)[1]) == 0:
                raise ValueError(f"{ident!r} must be an identity (cn:<name> or uid:<login>)")
        return value

    @field_validator("certified")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()

    def job_config(self) -> Config:
        """The psik Config jobs are created with: callbacks use the service identity and
        go only where `psik.callback.allowed` says (unset: nowhere); with run_as caller
        only the service sends them."""
        update: dict = {}
        if self.psik.certified is None and self.certified is not None:
            update["certified"] = self.certified
        if self.psik.callback.allowed is None:
            update["callback"] = self.psik.callback.model_copy(update={"allowed": []})
        if self.run_as == "caller":  # jobs cannot read the service's key: it sends them
            update["service_callbacks"] = True
        return self.psik.model_copy(update=update) if update else self.psik


def load_settings(
    flag: Path | None = None, environ: Mapping[str, str] | None = None
) -> ApiSettings:
    path, explicit = find_config(flag, "PSIK_API_CONFIG", "psik-api.yaml", environ)
    if path is None:
        return ApiSettings()
    if explicit and not path.is_file():
        raise SpecError(f"{path}: config file not found")
    return load_model(ApiSettings, path)
