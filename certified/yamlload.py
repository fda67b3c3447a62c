"""The suite's one YAML (and JSON) reader: safe types only, aliases bounded, errors located.

PyYAML shares the object an alias points to, so a 273-byte "billion laughs" document
parses quickly, but anything that walks the result (validation, dumping, error
location) walks every expansion. `load_yaml` counts the nodes the document would have
with every alias expanded (linear in the document's size, memoised per node) and refuses
it above `MAX_NODES`, before anything is built from it.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from .errors import ConfigError

#: Most nodes a document may have once its aliases are expanded. Real configurations
#: have a few hundred; an alias bomb has billions.
MAX_NODES = 100_000


class YamlError(ConfigError):
    """A document that is not valid YAML/JSON, or expands beyond `MAX_NODES`."""


def expanded_size(node: yaml.Node, limit: int = MAX_NODES) -> int:
    """Number of nodes `node` stands for with aliases expanded (stops counting past
    `limit`); RecursionError for an alias inside its own anchor, or nesting too deep."""
    memo: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in memo:
            if memo[key] < 0:
                raise RecursionError
            return memo[key]
        memo[key] = -1  # being counted: meeting it again means an alias inside itself
        total = 1
        if isinstance(n, yaml.SequenceNode):
            for child in n.value:
                total += size(child)
                if total > limit:
                    break
        elif isinstance(n, yaml.MappingNode):
            for key_node, value_node in n.value:
                total += size(key_node) + size(value_node)
                if total > limit:
                    break
        memo[key] = total
        return total

    return size(node)


def _where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f": line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def load_yaml_node(text: str, source: str = "<yaml>") -> tuple[Any, yaml.Node | None]:
    """The data of a single YAML document and its node tree (for line numbers).

    Raises YamlError naming `source` (and the line) for invalid YAML or an alias bomb."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        try:
            too_big = expanded_size(node) > MAX_NODES
        except RecursionError:
            raise YamlError(f"{source}: refused: an alias (*name) refers to itself") from None
        if too_big:
            raise YamlError(
                f"{source}: refused: its aliases (*name) expand to more than {MAX_NODES}"
                " nodes (a YAML alias bomb?)"
            )
        return loader.construct_document(node), node
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
        raise YamlError(f"{source}{_where(exc)}: invalid YAML: {problem}") from None
    finally:
        loader.dispose()


def load_yaml(text: str, source: str = "<yaml>") -> Any:
    """Parse one YAML document safely (see the module docstring); errors name `source`."""
    return load_yaml_node(text, source)[0]


def load_document(text: str, source: str) -> Any:
    """JSON when `source` ends in .json (its errors read better), else YAML."""
    if source.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise YamlError(
                f"{source}: line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"
            ) from None
    return load_yaml(text, source)
