"""Human-readable byte sizes: parse "64MiB", "1.5G", "4096" and format them back."""

from __future__ import annotations

import re

_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "ki": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "ti": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Bytes in `text`: a number with an optional unit.

    Single letters and `KiB`/`MiB`/... are powers of 1024 (`8M` = 8 MiB, as in SLURM);
    `KB`/`MB`/... are powers of 1000. The result must be a positive whole number of bytes.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid size {text!r}")
    if isinstance(text, int):
        value, unit = float(text), ""
    else:
        m = _SIZE_RE.match(text)
        if m is None:
            raise ValueError(f"invalid size {text!r}: expected a number and a unit, e.g. 64MiB")
        value, unit = float(m.group(1)), m.group(2).lower()
    if unit not in _UNITS:
        raise ValueError(
            f"invalid size {text!r}: unknown unit {unit!r} (use B, K/KiB, M/MiB, G/GiB, T/TiB,"
            " or KB/MB/GB/TB for powers of 1000)"
        )
    nbytes = value * _UNITS[unit]
    if nbytes != int(nbytes):
        raise ValueError(f"invalid size {text!r}: not a whole number of bytes")
    if nbytes < 1:
        raise ValueError(f"invalid size {text!r}: must be at least 1 byte")
    return int(nbytes)


def format_size(nbytes: float) -> str:
    """`nbytes` with a binary unit and three significant figures, e.g. `1.50 GiB`."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
