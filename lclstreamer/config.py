"""Load a YAML configuration and turn validation errors into one located message."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from certified.yamlload import YamlError, load_yaml_node

from .errors import ConfigError
from .models import LclstreamerConfig

Loc = tuple[str | int, ...]
Marks = dict[Loc, tuple[int, int]]


def load_config(path: str | Path, model: type = LclstreamerConfig) -> Any:
    """Read, parse and validate a configuration file, or raise one ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    return parse_config(text, str(path), model)


def parse_config(text: str, origin: str = "<config>", model: type = LclstreamerConfig) -> Any:
    """Parse YAML text and validate it against `model`, or raise one ConfigError."""
    data, marks = parse_yaml(text, origin)
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the configuration must be a YAML mapping (key: value)")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, data, marks, origin)) from None


def parse_yaml(text: str, origin: str) -> tuple[Any, Marks]:
    """Parse YAML, returning the data and the (line, column) of every key path."""
    try:
        data, node = load_yaml_node(text, origin)
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    marks: Marks = {}
    if node is not None:
        _collect_marks(node, (), marks)
    return data, marks


def _collect_marks(node: yaml.Node, loc: Loc, marks: Marks) -> None:
    marks[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            try:
                k = yaml.safe_load(yaml.serialize(key))
            except yaml.YAMLError:
                continue
            sub = (*loc, k)
            _collect_marks(value, sub, marks)
            marks[sub] = (key.start_mark.line + 1, key.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _collect_marks(item, (*loc, i), marks)


def data_path(loc: Sequence[str | int], data: Any) -> Loc:
    """Map a pydantic error location onto the path in the YAML data.

    Pydantic inserts the discriminator tag (e.g. ``synthetic``) and validator
    names into locations; these are dropped by following the actual data.
    """
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, Mapping):
            if part in node:
                path.append(part)
                node = node[part]
                continue
            if isinstance(part, str) and part.isdigit() and int(part) in node:
                path.append(int(part))
                node = node[int(part)]
                continue
            if node.get("type") == part:  # discriminator tag
                continue
            path.append(part)  # a missing key: still the place to look
            node = None
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif node is None:
            path.append(part)
        # scalars: pydantic's extra parts (e.g. union member names) are dropped
    return tuple(path)


def _where(path: Loc, marks: Marks) -> str:
    probe = path
    while probe not in marks and probe:
        probe = probe[:-1]
    if probe in marks:
        line, col = marks[probe]
        return f" (line {line}, column {col})"
    return ""


def _dotted(path: Loc) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _message(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "union_tag_invalid":
        tags = sorted(t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(","))
        return f"unknown type {ctx.get('tag')!r}; valid types: {', '.join(tags)}"
    if kind == "union_tag_not_found":
        return "missing 'type'"
    if kind == "extra_forbidden":
        return "unknown key (not part of this section)"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    if kind in ("value_error", "assertion_error") and msg.startswith(("Value error, ", "Assert")):
        msg = msg.split(", ", 1)[1]
    inp = err.get("input")
    if kind.endswith(("_type", "_parsing")) and not isinstance(inp, dict | list):
        msg += f" (got {inp!r})"
    return msg


def validation_problems(exc: ValidationError, data: Any) -> list[tuple[Loc, str]]:
    """(YAML path, message) for every error of a validation, cross-field ones located."""
    problems: list[tuple[Loc, str]] = []
    for err in exc.errors():
        ctx = err.get("ctx") or {}
        if err["type"] == "cross_field" and "problems" in ctx:
            base = data_path(err["loc"], data)
            problems.extend(((*base, *loc), msg) for loc, msg in ctx["problems"])
            continue
        path = data_path(err["loc"], data)
        if err["type"] == "union_tag_invalid":
            path = (*path, "type")
        problems.append((path, _message(err)))
    return _dedupe(problems)


def _dedupe(items: Iterable[tuple[Loc, str]]) -> list[tuple[Loc, str]]:
    seen: set[tuple[Loc, str]] = set()
    out = []
    for item in items:
        key = (tuple(item[0]), item[1])
        if key not in seen:
            seen.add(key)
            out.append((tuple(item[0]), item[1]))
    return out


def format_validation_error(
    exc: ValidationError, data: Any, marks: Marks | None = None, origin: str = "<config>"
) -> str:
    """One readable block: the file, then one line per problem with its YAML path and line."""
    problems = validation_problems(exc, data)
    n = len(problems)
    lines = [f"{origin}: invalid configuration ({n} problem{'s' if n != 1 else ''})"]
    for path, msg in problems:
        lines.append(f"  {_dotted(path)}{_where(path, marks or {})}: {msg}")
    return "\n".join(lines)
