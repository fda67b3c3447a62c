"""Render the configuration reference (Markdown) from the models.

`python -m lclstreamer.docgen` prints it; docs/lclstreamer.md embeds it between
markers and a test checks the two agree.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from . import models as m

BEGIN = "<!-- BEGIN GENERATED REFERENCE (python -m lclstreamer.docgen) -->"
END = "<!-- END GENERATED REFERENCE -->"

SECTIONS: list[tuple[str, list[type[BaseModel]]]] = [
    ("Top level", [m.LclstreamerConfig]),
    (
        "event_source",
        [
            m.SyntheticEventSource,
            m.SyntheticDetector,
            m.HDF5EventSource,
            m.HDF5Timestamp,
            m.HDF5Watch,
            m.Psana1EventSource,
            m.Psana2EventSource,
            m.SyntheticTofEventSource,
            m.StemSectorEventSource,
        ],
    ),
    (
        "data_sources (name: source)",
        [
            m.DetectorData,
            m.ScalarData,
            m.TimestampData,
            m.PhotonEnergyData,
            m.WavelengthData,
            m.EventIndexData,
            m.EventCodesData,
            m.ConstantData,
            m.RandomArrayData,
            m.SourceIdentifierData,
            m.RunInfoData,
        ],
    ),
    (
        "processing_pipeline",
        [m.BatchPipeline, m.PeakFinderPipeline, m.PeaknetPipeline, m.TofPipeline],
    ),
    (
        "data_serializer",
        [
            m.HDF5Serializer,
            m.MsgpackSerializer,
            m.SimplonSerializer,
            m.NumpySerializer,
            m.StemSectorSerializer,
        ],
    ),
    (
        "data_handlers (list)",
        [
            m.FileHandler,
            m.NNGPushHandler,
            m.ZMQPushHandler,
            m.NullHandler,
            m.ZMQRepHandler,
            m.ZMQPubHandler,
        ],
    ),
]


def type_text(tp: Any) -> str:
    """A short human name for a field's type."""
    origin = get_origin(tp)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_text(a) for a in get_args(tp) if a is not type(None)) + (
            " or null" if type(None) in get_args(tp) else ""
        )
    if origin is typing.Annotated:
        return type_text(get_args(tp)[0])
    if origin is list:
        return f"list of {type_text(get_args(tp)[0])}"
    if origin is dict:
        k, v = get_args(tp)
        return f"map {type_text(k)} → {type_text(v)}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.__name__
    return getattr(tp, "__name__", str(tp))


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            value = value.model_dump()
        elif isinstance(value, dict):
            value = {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in value.items()}
        return f"`{value}`"
    if field.default is None:
        return "`null`"
    return '`""`' if field.default == "" else f"`{field.default}`"


def model_table(model: type[BaseModel]) -> str:
    """A heading and a table of one model's keys."""
    type_field = model.model_fields.get("type")
    tag = get_args(type_field.annotation)[0] if type_field is not None else None
    title = f"`type: {tag}` ({model.__name__})" if tag else model.__name__
    lines = [
        f"#### {title}",
        "",
        (model.__doc__ or "").strip(),
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in model.model_fields.items():
        if name == "type":
            continue
        desc = (field.description or "").replace("|", "\\|")
        default = _default(field)
        lines.append(f"| `{name}` | {type_text(field.annotation)} | {default} | {desc} |")
    return "\n".join(lines)


def reference() -> str:
    """The whole generated reference, between its markers."""
    parts = [BEGIN]
    for title, models in SECTIONS:
        parts.append(f"### {title}")
        parts.extend(model_table(model) for model in models)
    parts.append(END)
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
