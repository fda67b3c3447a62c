"""Per-rank part files: what a consumer rank made durable before acknowledging it.

A rank acknowledges a sector only once it is in its part file (`<output>.parts/`): the
events of the frame it belongs to (counted), or the sector itself (parked, raw) while its
frame waits for the rest. A consumer job started with the same output reads every part
file left by a job that died (`read_parts`): counted frames are kept, parked sectors go
back into assembly. Records are appended and flushed to the OS before the acknowledgement
is sent: a killed process's writes survive it (no fsync: a crash of the node itself loses
the page cache, and the stream's data with it anyway). A record cut short at the end of a
file was never acknowledged (its sectors come back from the buffer) and is ignored.

Record: `<1sqiiI` (kind, frame, a, b, payload bytes), then the payload.
  H  header: msgpack {version, scan_shape, frame_shape, sectors}
  T  thresholds: msgpack of `Thresholds` (the frames after it were counted with them)
  E  events: frame, a = status (1 complete, 2 incomplete), b = sectors present; uint32 indices
  P  parked sector: frame, a = sector; the sector's uint16 pixels (rows x width, C order)
  B  a bad message (undecodable), counted
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import numpy as np

from ..errors import DataError
from .counting import Thresholds

VERSION = 1
RECORD = struct.Struct("<1sqiiI")
COMPLETE = 1


def parts_dir(output: Path) -> Path:
    """Where the ranks of a job writing `output` keep their part files."""
    return output.with_name(output.name + ".parts")


def _header(
    scan_shape: tuple[int, int], frame_shape: tuple[int, int], sectors: int
) -> dict[str, object]:
    return {
        "version": VERSION,
        "scan_shape": list(scan_shape),
        "frame_shape": list(frame_shape),
        "sectors": sectors,
    }


class PartWriter:
    """One rank's part file (append only; `flush` before acknowledging)."""

    def __init__(
        self,
        path: Path,
        scan_shape: tuple[int, int],
        frame_shape: tuple[int, int],
        sectors: int,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._f = path.open("xb", buffering=1 << 20)
        self._record(b"H", 0, 0, 0, msgpack.packb(_header(scan_shape, frame_shape, sectors)))
        self.parked = 0  # sectors written raw

    def _record(self, kind: bytes, frame: int, a: int, b: int, payload) -> None:
        self._f.write(RECORD.pack(kind, frame, a, b, memoryview(payload).nbytes))
        self._f.write(payload)

    def thresholds(self, th: Thresholds) -> None:
        self._record(b"T", 0, 0, 0, msgpack.packb(th.model_dump()))

    def events(self, frame: int, status: int, sectors: int, events: np.ndarray) -> None:
        self._record(b"E", frame, status, sectors, np.ascontiguousarray(events, np.uint32))

    def park(self, frame: int, sector: int, pixels: np.ndarray) -> None:
        self._record(b"P", frame, sector, 0, np.ascontiguousarray(pixels, np.uint16))
        self.parked += 1

    def bad(self) -> None:
        self._record(b"B", 0, 0, 0, b"")

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


@dataclass
class Counted:
    status: int
    events: np.ndarray
    sectors: int
    thresholds: int  # index into Recovered.thresholds


@dataclass
class Recovered:
    """What earlier jobs' part files hold (see the module doc)."""

    files: int = 0
    torn: int = 0  # files whose last record was cut short (never acknowledged)
    thresholds: list[Thresholds] = field(default_factory=list)
    counted: dict[int, Counted] = field(default_factory=dict)
    parked: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)  # frame->sector->px
    bad_messages: int = 0

    @property
    def messages(self) -> int:
        """Data messages the parts account for."""
        return (
            sum(c.sectors for c in self.counted.values())
            + sum(len(p) for p in self.parked.values())
            + self.bad_messages
        )


def read_parts(
    folder: Path, scan_shape: tuple[int, int], frame_shape: tuple[int, int], sectors: int
) -> Recovered:
    """Every part file in `folder` (none: nothing recovered). A part file of another scan
    geometry, or a damaged record before the end of a file, is a DataError."""
    rec = Recovered()
    if not folder.is_dir():
        return rec
    want = _header(scan_shape, frame_shape, sectors)
    for path in sorted(folder.glob("*.part")):
        rec.files += 1
        _read_one(path, want, rec, frame_shape, sectors)
    for frame in rec.counted:
        rec.parked.pop(frame, None)  # counted: its parked sectors are superseded
    return rec


def _read_one(
    path: Path,
    want: dict[str, object],
    rec: Recovered,
    frame_shape: tuple[int, int],
    sectors: int,
) -> None:
    data = memoryview(path.read_bytes())
    rows, width = frame_shape[0], frame_shape[1] // sectors
    pos, th_index = 0, -1
    while pos < len(data):
        if pos + RECORD.size > len(data):
            rec.torn += 1
            return
        kind, frame, a, b, n = RECORD.unpack_from(data, pos)
        body = data[pos + RECORD.size : pos + RECORD.size + n]
        if len(body) < n:
            rec.torn += 1
            return
        where = f"{path}: record at byte {pos}"
        if pos == 0:
            try:
                got = msgpack.unpackb(body) if kind == b"H" else None
            except (ValueError, msgpack.UnpackException):
                got = None
            if got != want:
                raise DataError(f"{where}: a part file of another scan ({got}, this job: {want})")
        elif kind == b"T":
            rec.thresholds.append(Thresholds.model_validate(msgpack.unpackb(body)))
            th_index = len(rec.thresholds) - 1
        elif kind == b"E":
            if th_index < 0:
                raise DataError(f"{where}: events before any thresholds")
            old = rec.counted.get(frame)
            if old is None or (old.status != COMPLETE and a == COMPLETE):
                ev = np.frombuffer(body, dtype=np.uint32).copy()
                rec.counted[frame] = Counted(a, ev, b, th_index)
        elif kind == b"P":
            if not 0 <= a < sectors or n != rows * width * 2:
                raise DataError(f"{where}: parked sector {a} of {n} bytes does not fit")
            px = np.frombuffer(body, dtype=np.uint16).reshape(rows, width).copy()
            rec.parked.setdefault(frame, {})[a] = px
        elif kind == b"B":
            rec.bad_messages += 1
        else:
            raise DataError(f"{where}: unknown record kind {kind!r}")
        pos += RECORD.size + n
