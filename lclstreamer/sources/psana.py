"""What the psana1 and psana2 adapters share; psana is imported only when a source opens."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import DataError, SourceError


def import_psana(which: str) -> Any:
    """The psana module of the generation `which` names, or a SourceError saying why not.

    Both generations are imported as `psana`; psana1 has `EventId`, psana2 does not.
    """
    try:
        psana = importlib.import_module("psana")
    except ImportError as exc:
        hint = " (pip install 'lclstream-suite[psana]')" if which == "psana2" else ""
        raise SourceError(
            f"the {which} event source needs the psana package (an LCLS analysis environment)"
            f"{hint}; it cannot be imported here: {exc}"
        ) from None
    if (which == "psana1") != hasattr(psana, "EventId"):
        other = "psana2 (LCLS-II)" if which == "psana1" else "psana1 (LCLS-I)"
        raise SourceError(
            f"the {which} event source needs {which}, but the psana installed here"
            f" ({psana.__file__}) is {other}"
        )
    return psana


def as_array(value: Any, which: str, name: str, kind: str) -> np.ndarray | None:
    """A psana value as an array (not copied); None stays None; a mapping is an error."""
    if value is None or type(value) is np.ndarray:
        return value
    if isinstance(value, dict):
        keys = ", ".join(map(str, list(value)[:8]))
        raise DataError(
            f"{which} {name}.{kind} gives a mapping (keys {keys}), not an array: name one array"
        )
    return np.asarray(value)


class Detectors:
    """psana detector objects created on first use and cached by name."""

    def __init__(self, make: Callable[[str], Any], which: str) -> None:
        self._make = make
        self._which = which
        self._cache: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        det = self._cache.get(name)
        if det is None:
            try:
                det = self._make(name)
            except Exception as exc:  # psana raises assorted types for unknown detectors
                raise SourceError(
                    f"{self._which}: no detector {name!r} in this run: {exc}"
                ) from None
            self._cache[name] = det
        return det
