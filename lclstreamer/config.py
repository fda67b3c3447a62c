"""Load a YAML configuration and turn validation errors into one located message."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from certified.yamlload import YamlError, load_yaml_node

from . import compat
from .errors import ConfigError
from .models import LclstreamerConfig

Loc = tuple[str | int, ...]
Marks = dict[Loc, tuple[int, int]]


def load_config(path: str | Path, model: type = LclstreamerConfig) -> Any:
    """Read, parse and validate a configuration file, or raise one ConfigError."""
    return parse_config(read_config_text(path), str(path), model)


def read_config_text(path: str | Path) -> str:
    """The text of a configuration file, or one ConfigError."""
    path = Path(path)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None


def parse_config(text: str, origin: str = "<config>", model: type = LclstreamerConfig) -> Any:
    """Parse YAML text (native or upstream lclstreamer's) and validate it against `model`,
    or raise one ConfigError."""
    return explain_config(text, origin, model)[0]


def explain_config(
    text: str, origin: str = "<config>", model: type = LclstreamerConfig
) -> tuple[Any, list[str] | None]:
    """The validated model and, for an upstream file, the notes of its mapping (else None).

    Errors are located in the file as written, upstream names and all.
    """
    data, marks = parse_yaml(text, origin)
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the configuration must be a YAML mapping (key: value)")
    mapped = None
    if compat.is_upstream(data):
        try:
            mapped = compat.to_native(data)
        except compat.UpstreamError as exc:
            where = _where(exc.loc, marks)
            raise ConfigError(
                f"{origin}: invalid configuration (1 problem)\n  {_dotted(exc.loc)}{where}: {exc}"
            ) from None
        data = mapped.data
    try:
        cfg = model.model_validate(data)
    except ValidationError as exc:
        translate = mapped.upstream_path if mapped else None
        raise ConfigError(format_validation_error(exc, data, marks, origin, translate)) from None
    return cfg, (mapped.notes if mapped else None)


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
    exc: ValidationError,
    data: Any,
    marks: Marks | None = None,
    origin: str = "<config>",
    translate: Callable[[Loc], Loc] | None = None,
) -> str:
    """One readable block: the file, then one line per problem with its YAML path and line.

    `translate` maps a path in `data` to the path in the file (for mapped upstream files).
    """
    problems = validation_problems(exc, data)
    if translate is not None:
        problems = [(translate(path), msg) for path, msg in problems]
    n = len(problems)
    lines = [f"{origin}: invalid configuration ({n} problem{'s' if n != 1 else ''})"]
    for path, msg in problems:
        lines.append(f"  {_dotted(path)}{_where(path, marks or {})}: {msg}")
    return "\n".join(lines)


def native_yaml(cfg: Any, notes: list[str] | None) -> str:
    """The native YAML of a validated configuration (what was set, defaults left out),
    headed by the mapping notes of an upstream file as comments."""
    head = ["# native form of an upstream lclstreamer configuration"] if notes is not None else []
    head += [f"# note: {n}" for n in notes or ()]
    body = yaml.safe_dump(cfg.model_dump(mode="json", exclude_unset=True), sort_keys=False)
    return "\n".join([*head, body])
