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


def _union_members(tp: Any) -> list[type[BaseModel]]:
    """The models of a discriminated union (unwrapping Annotated), in declaration order."""
    if get_origin(tp) is typing.Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        return [a for a in get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
    return []


def _nested(model: type[BaseModel], seen: set[type[BaseModel]]) -> list[type[BaseModel]]:
    """Models used by `model`'s fields (e.g. a source's detector list), each once."""
    found: list[type[BaseModel]] = []
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                if tp not in seen:
                    seen.add(tp)
                    found.append(tp)
                    found.extend(_nested(tp, seen))
            else:
                stack.extend(reversed(get_args(tp)))
    return found


def sections(
    config: type[BaseModel] = m.LclstreamerConfig,
) -> list[tuple[str, list[type[BaseModel]]]]:
    """Reference sections derived from the models: the top level, then one per field whose
    type is a `type`-discriminated union (each member followed by the models it uses), so a
    new registered type appears here without editing this file."""
    out: list[tuple[str, list[type[BaseModel]]]] = [("Top level", [config])]
    for name, field in config.model_fields.items():
        tp, suffix = field.annotation, ""
        if get_origin(tp) is list:
            tp, suffix = get_args(tp)[0], " (list)"
        elif get_origin(tp) is dict:
            tp, suffix = get_args(tp)[1], " (name: source)"
        members = _union_members(tp)
        if not members:
            continue
        seen: set[type[BaseModel]] = set(members)
        models: list[type[BaseModel]] = []
        for member in members:
            models.append(member)
            models.extend(_nested(member, seen))
        out.append((name + suffix, models))
    return out


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
    for title, models in sections():
        parts.append(f"### {title}")
        parts.extend(model_table(model) for model in models)
    parts.append(END)
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
