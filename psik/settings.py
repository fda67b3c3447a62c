"""Where psik's configuration comes from.

Search order: the `--config` flag, `$PSIK_CONFIG`, `$VIRTUAL_ENV/etc/psik.yaml`,
`/etc/psik.yaml`; with none of them, the defaults of `Config` (one local backend named
`default`, jobs under ~/.local/share/psik/jobs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from .errors import SpecError, describe_validation_error
from .models import Config, load_document

M = TypeVar("M", bound=BaseModel)


def search_path(
    flag: Path | None, env_var: str, filename: str, environ: Mapping[str, str] | None = None
) -> tuple[Path | None, bool]:
    """The config file to read, and whether it was asked for explicitly (flag or env)."""
    environ = os.environ if environ is None else environ
    if flag is not None:
        return Path(flag), True
    if environ.get(env_var):
        return Path(environ[env_var]), True
    candidates = []
    if environ.get("VIRTUAL_ENV"):
        candidates.append(Path(environ["VIRTUAL_ENV"]) / "etc" / filename)
    candidates.append(Path("/etc") / filename)
    for path in candidates:
        if path.is_file():
            return path, False
    return None, False


def load_model(model: type[M], path: Path) -> M:
    """Read a YAML/JSON file into `model`, with file- and field-located errors."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: {exc.strerror}") from None
    try:
        data = load_document(text, str(path))
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(describe_validation_error(exc, str(path))) from None


def config_path(flag: Path | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    path, explicit = search_path(flag, "PSIK_CONFIG", "psik.yaml", environ)
    if path is not None and explicit and not path.is_file():
        raise SpecError(f"{path}: config file not found")
    return path


def load_config(flag: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """The Config from the first file in the search order, or the defaults."""
    path = config_path(flag, environ)
    return Config() if path is None else load_model(Config, path)
