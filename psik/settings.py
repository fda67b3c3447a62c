"""Where psik's configuration comes from.

Search order (`certified.configfind`): the `--config` flag, `$PSIK_CONFIG`,
`$VIRTUAL_ENV/etc/psik.yaml`, `/etc/psik.yaml`; with none of them, the defaults of
`Config` (one local backend named `default`, jobs under ~/.local/share/psik/jobs).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from certified.configfind import find_config
from certified.yamlload import YamlError, load_document

from .errors import SpecError, describe_validation_error
from .models import Config

M = TypeVar("M", bound=BaseModel)


def load_model(model: type[M], path: Path) -> M:
    """Read a YAML/JSON file into `model`, with file- and field-located errors."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: {exc.strerror}") from None
    try:
        data = load_document(text, str(path))
    except YamlError as exc:
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
    path, explicit = find_config(flag, "PSIK_CONFIG", "psik.yaml", environ)
    if path is not None and explicit and not path.is_file():
        raise SpecError(f"{path}: config file not found")
    return path


def load_config(flag: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """The Config from the first file in the search order, or the defaults."""
    path = config_path(flag, environ)
    return Config() if path is None else load_model(Config, path)
