"""Panel geometry from CrystFEL geometry files, and assembly of panels into one image
(pure functions; the arrays they return are computed once per detector)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

_VECTOR = re.compile(r"([+-]?\s*\d*\.?\d*(?:[eE][+-]?\d+)?)\s*([xyz])")


@dataclass(frozen=True)
class Panel:
    """One panel: its slab of the data array and where its pixels lie (in pixels)."""

    name: str
    min_fs: int
    max_fs: int
    min_ss: int
    max_ss: int
    corner_x: float
    corner_y: float
    fs: tuple[float, float]  # x, y of one step along fs
    ss: tuple[float, float]  # x, y of one step along ss


def parse_vector(text: str, where: str) -> tuple[float, float]:
    """`x`, `-y`, `+0.9998x -0.0175y` -> (x, y)."""
    x = y = 0.0
    rest = text.replace(" ", "")
    found = False
    for coeff, axis in _VECTOR.findall(rest):
        found = True
        c = 1.0 if coeff in ("", "+") else -1.0 if coeff == "-" else float(coeff)
        if axis == "x":
            x += c
        elif axis == "y":
            y += c
    if not found or _VECTOR.sub("", rest):
        raise ConfigError(f"{where}: cannot read the direction {text!r} (e.g. x, -y, 0.99x+0.1y)")
    return x, y


def parse_geometry(text: str, origin: str = "<geometry>") -> list[Panel]:
    """The panels of a CrystFEL geometry file (keys `name/min_fs` etc.; other keys and
    global settings are ignored); errors name the file, line and key."""
    keys: dict[str, dict[str, tuple[str, int]]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split(";", 1)[0].strip()
        if "=" not in line or "/" not in line.split("=", 1)[0]:
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        panel, _, field = key.rpartition("/")
        keys.setdefault(panel, {})[field] = (value, n)
    panels = []
    needed = ("min_fs", "max_fs", "min_ss", "max_ss", "corner_x", "corner_y", "fs", "ss")
    for name, fields in keys.items():
        if not any(k in fields for k in needed):
            continue  # e.g. bad regions, rigid groups
        missing = [k for k in needed if k not in fields]
        if missing:
            raise ConfigError(f"{origin}: panel {name} has no {', '.join(missing)}")

        def num(k: str, kind: type = float, fields=fields, name=name) -> float:
            value, n = fields[k]
            try:
                return kind(value)
            except ValueError:
                raise ConfigError(
                    f"{origin}, line {n}: {name}/{k} = {value!r} is not a number"
                ) from None

        fs_v, n_fs = fields["fs"]
        ss_v, n_ss = fields["ss"]
        panels.append(
            Panel(
                name,
                int(num("min_fs", int)),
                int(num("max_fs", int)),
                int(num("min_ss", int)),
                int(num("max_ss", int)),
                num("corner_x"),
                num("corner_y"),
                parse_vector(fs_v, f"{origin}, line {n_fs}: {name}/fs"),
                parse_vector(ss_v, f"{origin}, line {n_ss}: {name}/ss"),
            )
        )
    if not panels:
        raise ConfigError(f"{origin}: no panels (keys like p0/min_fs, p0/corner_x, p0/fs)")
    return panels


@dataclass(frozen=True)
class Assembly:
    """Where each used data pixel lands in the assembled image (flat indices)."""

    shape: tuple[int, int]
    source: np.ndarray  # indices into the data array flattened as 2-D (ss, fs)
    target: np.ndarray  # indices into the assembled image, flattened
    valid: np.ndarray  # bool (shape): pixels some panel covers


def assembly(panels: list[Panel], data_shape: tuple[int, int]) -> Assembly:
    """Nearest-pixel placement of every panel pixel: pixel (ss, fs) of a panel lies at
    corner + (fs - min_fs) * fs_vector + (ss - min_ss) * ss_vector; y grows downwards in
    the image (rows), x to the right (columns)."""
    rows, cols, srcs = [], [], []
    for p in panels:
        if p.max_ss >= data_shape[0] or p.max_fs >= data_shape[1]:
            raise ConfigError(
                f"geometry panel {p.name} reads ss {p.min_ss}..{p.max_ss}, fs"
                f" {p.min_fs}..{p.max_fs}, outside the data array {data_shape}"
            )
        ss, fs = np.mgrid[p.min_ss : p.max_ss + 1, p.min_fs : p.max_fs + 1]
        dfs, dss = fs - p.min_fs, ss - p.min_ss
        x = p.corner_x + dfs * p.fs[0] + dss * p.ss[0]
        y = p.corner_y + dfs * p.fs[1] + dss * p.ss[1]
        cols.append(np.rint(x).astype(np.int64).ravel())
        rows.append(np.rint(y).astype(np.int64).ravel())
        srcs.append((ss * data_shape[1] + fs).ravel())
    r, c, src = np.concatenate(rows), np.concatenate(cols), np.concatenate(srcs)
    r -= r.min()
    c -= c.min()
    shape = (int(r.max()) + 1, int(c.max()) + 1)
    target = r * shape[1] + c
    valid = np.zeros(shape, dtype=bool)
    valid.reshape(-1)[target] = True
    return Assembly(shape, src, target, valid)
