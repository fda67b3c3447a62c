"""Helpers for the science tests: example configs with test ports, scoring of peak lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lclstreamer.models import LclstreamerConfig
from lclstreamer.protocols import StreamContext
from lclstreamer.sources.synthetic import SyntheticSource

from .helpers import EXAMPLES


def example(name: str) -> dict[str, Any]:
    """The parsed example configuration `name` (e.g. "sfx-crystfel.yaml")."""
    return yaml.safe_load((EXAMPLES / name).read_text())


def source_of(cfg: dict[str, Any]) -> SyntheticSource:
    """The synthetic event source of a configuration, as one process sees it."""
    model = LclstreamerConfig.model_validate(cfg)
    return SyntheticSource(model.event_source, StreamContext(0, 1, ""))


def injected(cfg: dict[str, Any], detector: str, events: range) -> dict[int, np.ndarray]:
    """Event index -> (peaks, ndim) injected spot centres, from the same configuration."""
    src = source_of(cfg)
    return {i: src.injected_peaks(detector, i) for i in events}


def match(found: np.ndarray, truth: np.ndarray, tol: float = 2.0) -> tuple[int, int]:
    """(truth points with a found point within `tol`, found points with a truth point
    within `tol`); points are rows of coordinates in the same order."""
    if len(found) == 0 or len(truth) == 0:
        return 0, 0
    d = np.sqrt(((found[:, None, :] - truth[None, :, :]) ** 2).sum(axis=2))
    return int((d.min(axis=0) <= tol).sum()), int((d.min(axis=1) <= tol).sum())


def parse_stream(path: Path) -> list[dict[str, Any]]:
    """The chunks of a CrystFEL stream: headers (`key = value` lines) and the peak list
    (fs, ss, 1/d, intensity) of each."""
    chunks: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    in_peaks = False
    for line in path.read_text().splitlines():
        if line.startswith("----- Begin chunk"):
            current = {"peaks": []}
            continue
        if current is None:
            continue
        if line.startswith("----- End chunk"):
            chunks.append(current)
            current = None
        elif line.startswith("  fs/px"):
            in_peaks = True
        elif line.startswith("End of peak list"):
            in_peaks = False
        elif in_peaks:
            fs, ss, inv_d, intensity, _panel = line.split()
            current["peaks"].append((float(fs), float(ss), float(inv_d), float(intensity)))
        elif " = " in line:
            key, value = line.split(" = ", 1)
            current[key.strip()] = value.strip()
    return chunks
