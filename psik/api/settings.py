"""psik-api settings and where they come from.

Search order: the `--config` flag, `$PSIK_API_CONFIG`, `$VIRTUAL_ENV/etc/psik-api.yaml`,
`/etc/psik-api.yaml`; with none of them, the defaults below.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

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

    @field_validator("certified")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()

    def job_config(self) -> Config:
        """The psik Config jobs are created with: callbacks use the service identity."""
        if self.psik.certified is None and self.certified is not None:
            return self.psik.model_copy(update={"certified": self.certified})
        return self.psik


def load_settings(
    flag: Path | None = None, environ: Mapping[str, str] | None = None
) -> ApiSettings:
    path, explicit = find_config(flag, "PSIK_API_CONFIG", "psik-api.yaml", environ)
    if path is None:
        return ApiSettings()
    if explicit and not path.is_file():
        raise SpecError(f"{path}: config file not found")
    return load_model(ApiSettings, path)
