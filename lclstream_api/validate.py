"""Checking a transfer's lclstreamer configuration with lclstreamer's own models (shared
by the service and, offline, by `lclstream validate`)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from lclstreamer import compat
from lclstreamer.models import PipelineConfig


class ConfigProblems(ValueError):
    """A configuration lclstreamer refuses: `problems` are (location, message) pairs."""

    def __init__(self, problems: list[tuple[tuple, str]]) -> None:
        self.problems = problems
        super().__init__(
            "; ".join(f"config.{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems)
        )


def without_handlers(data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """`data` without its data handlers (top level, and inside upstream's older
    `lclstreamer:` section); whether there were any. A user's own lclstreamer file names
    its handlers; a transfer's handlers are the service's buffers."""
    out = {k: v for k, v in data.items() if k != "data_handlers"}
    inner = out.get("lclstreamer")
    if isinstance(inner, dict) and "data_handlers" in inner:
        out["lclstreamer"] = {k: v for k, v in inner.items() if k != "data_handlers"}
        return out, True
    return out, "data_handlers" in data


def native_config(data: Any) -> dict[str, Any]:
    """The validated native configuration (upstream dialect mapped), as plain data, or
    ConfigProblems naming each bad field."""
    if not isinstance(data, dict):
        raise ConfigProblems([((), "the configuration must be a mapping")])
    if "data_handlers" in data:
        raise ConfigProblems(
            [(("data_handlers",), "set by the service (the buffers' addresses): remove it")]
        )
    if compat.is_upstream(data):
        try:
            data = dict(compat.to_native(data).data)
        except compat.UpstreamError as exc:
            raise ConfigProblems([(tuple(exc.loc), str(exc))]) from None
        data.pop("data_handlers", None)  # upstream's older layout names them inside
    try:
        PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigProblems([(tuple(e["loc"]), e["msg"]) for e in exc.errors()]) from None
    return dict(data)
