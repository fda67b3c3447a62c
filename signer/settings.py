"""Signer settings: where its CA, ledger and socket are."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class SignerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config_dir: Path  # a certified config dir whose CA signs user certificates
    socket: Path
    db: Path | None = None  # default: <config_dir>/signer.db
    days: int = Field(default=30, ge=1, le=3650)

    @property
    def db_path(self) -> Path:
        return self.db or self.config_dir / "signer.db"
