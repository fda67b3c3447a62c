"""The 4D-STEM consumer: one consumer group per MPI rank (`mpirun -n N stem-count ...`).

Each rank dials the buffer's OUT (keyed routing, acknowledged delivery), assembles frames
from their sectors, electron-counts each frame as it completes (thresholds from its first
`threshold_frames` complete frames), and after the end of the stream counts the frames
still missing sectors (flagged incomplete) once it got every message the buffer's info
message says it was given. Rank 0 gathers the sparse events and writes one HDF5 file in
stempy's format."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from nngstream.acked import AckedConsumer

from ..errors import DataError
from ..mpi import Comm
from .assembly import Assembler
from .counting import Counter, Thresholds, thresholds
from .output import write_counts
from .wire import decode
from .zmqrecv import ZmqSectorConsumer

log = logging.getLogger("lclstreamer.stem")
COMPLETE, INCOMPLETE = 1, 2


class StemSettings(BaseModel):
    """What a consumer job needs (the CLI options map one to one)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="the buffer's OUT address")
    scan_shape: tuple[int, int] = Field(description="(Nx, Ny) scan positions")
    frame_shape: tuple[int, int] = (576, 576)
    sectors: int = Field(default=4, ge=1)
    dark: Path = Field(description=".npy file: the dark reference (float, frame_shape)")
    output: Path = Field(description="HDF5 file written by rank 0 (stempy's format)")
    background_sigma: float = Field(default=4.0, gt=0)
    xray_sigma: float = Field(default=10.0, gt=0)
    threshold_frames: int = Field(default=10, ge=1)
    dial_timeout: float = Field(default=10.0, gt=0)
    proto: Literal["nng", "zmq"] = Field(
        default="nng",
        description="nng: the buffer's OUT runs --delivery acked; zmq: its OUT is a keyed"
        " ZMQ OUT (--out-proto zmq), at-most-once (zmqrecv.py)",
    )


class RankResult(BaseModel):
    """One rank's counts and accounting (what it sends to rank 0)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    rank: int
    events: dict[int, Any] = Field(default_factory=dict)  # frame -> uint32 array
    status: dict[int, int] = Field(default_factory=dict)  # frame -> COMPLETE | INCOMPLETE
    messages: int = 0
    expected: int | None = None  # from the buffer's info message
    duplicates: int = 0
    bad_messages: int = 0
    thresholds: Thresholds | None = None
    stream_end: bool = False
    lost_max: int = 0
    stream_messages: int | None = None  # data messages the buffer received (end message)
    seconds: float = 0.0


def load_dark(path: Path, frame_shape: tuple[int, int]) -> np.ndarray:
    try:
        dark = np.load(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"--dark {path}: cannot read a .npy array ({exc})") from None
    if dark.shape != tuple(frame_shape):
        raise DataError(f"--dark {path}: shape {dark.shape}, expected {tuple(frame_shape)}")
    return dark.astype(np.float32)


def consume(settings: StemSettings, rank: int, ranks: int = 1) -> RankResult:
    """This rank's share of the stream, counted (see the module doc)."""
    s = settings
    dark = load_dark(s.dark, s.frame_shape)
    asm = Assembler(s.frame_shape, s.sectors, np.clip(np.rint(dark), 0, 65535))
    res = RankResult(rank=rank)
    samples: list[tuple[int, np.ndarray, int]] = []  # frames held until thresholds exist
    counter: Counter | None = None
    t0 = time.monotonic()

    def count(frame: int, pixels: np.ndarray, status: int) -> None:
        nonlocal counter
        if counter is None:
            samples.append((frame, pixels.copy(), status))
            if len(samples) < s.threshold_frames:
                return
            counter = _start_counting(samples, dark, s, res)
            return
        res.events[frame] = counter(pixels)
        res.status[frame] = status

    def flush_samples() -> None:
        nonlocal counter
        if counter is None and samples:
            counter = _start_counting(samples, dark, s, res)

    if s.proto == "zmq":
        consumer = ZmqSectorConsumer(s.url, dial_timeout=s.dial_timeout, groups=ranks)
    else:
        consumer = AckedConsumer(s.url, dial_timeout=s.dial_timeout, groups=ranks)
    try:
        for _producer, _seq, payload in consumer.messages(lambda: res.messages):
            res.messages += 1
            try:
                sec = decode(payload)
            except DataError as exc:
                res.bad_messages += 1
                log.warning("message %d: %s", res.messages, exc)
                continue
            pixels = asm.add(sec.frame_number, sec.sector, sec.data)
            if pixels is not None:
                count(sec.frame_number, pixels, COMPLETE)
                asm.release(pixels)
    finally:
        consumer.close()
    res.stream_end = consumer.end is not None
    res.lost_max = consumer.end.lost_max if consumer.end is not None else 0
    if consumer.end is not None:
        res.stream_messages = consumer.end.recvd - consumer.end.dropped
    res.expected = consumer.info.expected if consumer.info is not None else None
    res.duplicates = consumer.duplicates + asm.duplicates
    if res.expected is not None and res.expected != res.messages:
        log.warning(
            "rank %d: received %d messages, the buffer says %d were given to it",
            rank,
            res.messages,
            res.expected,
        )
    for frame, pixels, _missing in asm.incomplete():
        count(frame, pixels, INCOMPLETE)
    flush_samples()
    res.seconds = time.monotonic() - t0
    return res


def _start_counting(
    samples: list[tuple[int, np.ndarray, int]],
    dark: np.ndarray,
    s: StemSettings,
    res: RankResult,
) -> Counter:
    """Thresholds from the sample frames, then count them."""
    pix = np.stack([p for _, p, _ in samples])
    th = thresholds(pix, dark, s.background_sigma, s.xray_sigma)
    res.thresholds = th
    counter = Counter(dark, th)
    for frame, pixels, status in samples:
        res.events[frame] = counter(pixels)
        res.status[frame] = status
    samples.clear()
    return counter


def merge(
    results: list[RankResult], scan_shape: tuple[int, int]
) -> tuple[list[np.ndarray], np.ndarray, dict[str, int | float | str]]:
    """Every rank's frames in one scan: events per frame, status, and the accounting
    (a frame reported by two ranks is counted once, the complete copy kept, and the
    double reported as `frames_double`)."""
    n = scan_shape[0] * scan_shape[1]
    empty = np.empty(0, dtype=np.uint32)
    events: list[np.ndarray] = [empty] * n
    status = np.zeros(n, dtype=np.uint8)
    counted_by = np.full(n, -1, dtype=np.int32)
    ths = np.full((len(results), 2), np.nan)
    double = 0
    for r in results:
        if r.thresholds is not None:
            ths[r.rank] = (r.thresholds.background, r.thresholds.xray)
        for frame, ev in r.events.items():
            st = r.status[frame]
            if not 0 <= frame < n:
                raise DataError(f"rank {r.rank}: frame {frame} is outside the scan of {n}")
            if status[frame]:
                double += 1
                if status[frame] == COMPLETE or st != COMPLETE:
                    continue
            events[frame], status[frame], counted_by[frame] = ev, st, r.rank
    acc: dict[str, int | float | str] = {
        "frames": n,
        "frames_complete": int((status == COMPLETE).sum()),
        "frames_incomplete": int((status == INCOMPLETE).sum()),
        "frames_missing": int((status == 0).sum()),
        "frames_double": double,
        "messages": sum(r.messages for r in results),
        "messages_expected": sum(r.expected or 0 for r in results),
        "bad_messages": sum(r.bad_messages for r in results),
        "duplicates": sum(r.duplicates for r in results),
        "ranks": len(results),
        "ranks_without_end": sum(not r.stream_end for r in results),
        "lost_max": max((r.lost_max for r in results), default=0),
        "stream_messages": max((r.stream_messages or 0 for r in results), default=0),
        "electrons": int(sum(len(e) for e in events)),
    }
    return events, status, counted_by, ths, acc


def run(settings: StemSettings, comm: Comm) -> dict[str, int | float | str] | None:
    """Consume on every rank, gather to rank 0, write the file there; rank 0 returns
    the accounting (other ranks None)."""
    res = consume(settings, comm.rank, comm.size)
    gathered = comm.gather(res)
    if comm.rank != 0 or gathered is None:
        return None
    events, status, counted_by, ths, acc = merge(gathered, settings.scan_shape)
    s = settings
    write_counts(s.output, events, s.scan_shape, s.frame_shape, status, counted_by, ths, acc)
    return acc
