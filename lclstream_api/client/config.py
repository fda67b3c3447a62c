"""A user's lclstreamer configuration as a transfer's `config`: read, handlers dropped,
checked with lclstreamer's own models (offline), and its canonical form for the cache."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ClientError


def read_config(path: Path) -> dict[str, Any]:
    """The YAML mapping in `path` (ClientError naming the file and line otherwise)."""
    from certified.yamlload import load_document

    try:
        text = path.read_text()
    except OSError as exc:
        raise ClientError(f"{path}: {exc.strerror}") from None
    data = load_document(text, str(path))
    if not isinstance(data, dict):
        raise ClientError(f"{path}: expected a mapping (an lclstreamer configuration)")
    return data


def transfer_config(config: Mapping[str, Any] | str | Path) -> tuple[dict[str, Any], bool]:
    """(the native, validated configuration without data handlers, whether it had any);
    `config` is a mapping or a YAML file (native or upstream dialect)."""
    from ..validate import ConfigProblems, native_config, without_handlers

    where = ""
    if isinstance(config, str | Path):
        where = f"{config}: "
        config = read_config(Path(config))
    data, had = without_handlers(dict(config))
    try:
        return native_config(data), had
    except ConfigProblems as exc:
        raise ClientError(f"{where}{exc}") from None


def canonical(config: Mapping[str, Any]) -> str:
    """Sorted-keys JSON of a native configuration after lclstreamer's validation (defaults
    filled in), so two spellings of one dataset give one text."""
    from lclstreamer.models import PipelineConfig

    model = PipelineConfig.model_validate(dict(config))
    return json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
