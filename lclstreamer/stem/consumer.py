"""The 4D-STEM consumer: one consumer group per MPI rank (`mpirun -n N stem-count ...`).

Each rank dials the buffer's OUT (keyed routing, acknowledged delivery), assembles frames
from their sectors, electron-counts each frame as it completes (thresholds from its first
`threshold_frames` complete frames), and after the end of the stream counts the frames
still missing sectors (flagged incomplete) once it got every message the buffer's info
message says it was given. It acknowledges a message only once it is durable in the
rank's part file (`parts`), so a job started after a dead one with the same output
loses nothing (docs/stem.md, "A consumer rank that dies"). Rank 0 gathers the sparse
events and writes one HDF5 file in stempy's format."""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections import deque
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
from .parts import PartWriter, Recovered, parts_dir, read_parts
from .wire import decode
from .zmqrecv import ZmqSectorConsumer

log = logging.getLogger("lclstreamer.stem")
RELEASE_BATCH = 16  # durable messages released (and the part file flushed) together
COMPLETE, INCOMPLETE = 1, 2


class CountSettings(BaseModel):
    """What counting and writing the file need (`stem-count merge`: no stream)."""

    model_config = ConfigDict(extra="forbid")

    scan_shape: tuple[int, int] = Field(description="(Nx, Ny) scan positions")
    frame_shape: tuple[int, int] = (576, 576)
    sectors: int = Field(default=4, ge=1)
    dark: Path = Field(description=".npy file: the dark reference (float, frame_shape)")
    output: Path = Field(description="HDF5 file written by rank 0 (stempy's format)")
    background_sigma: float = Field(default=4.0, gt=0)
    xray_sigma: float = Field(default=10.0, gt=0)
    threshold_frames: int = Field(default=10, ge=1, description="frames the thresholds need")


class StemSettings(CountSettings):
    """What a consumer job needs (the CLI options map one to one)."""

    url: str = Field(description="the buffer's OUT address")
    dial_timeout: float = Field(default=10.0, gt=0)
    credit: int = Field(default=256, ge=1, le=256, description="unacknowledged messages held")
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
    recovered_sectors: int = 0  # parked sectors of earlier jobs put back into assembly
    recovered_again: int = 0  # messages received again that earlier jobs' parts hold
    parked: int = 0  # sectors this rank parked in its part file
    seconds: float = 0.0
    first_message: float | None = None  # time.time() of the first data message


def load_dark(path: Path, frame_shape: tuple[int, int]) -> np.ndarray:
    try:
        dark = np.load(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"--dark {path}: cannot read a .npy array ({exc})") from None
    if dark.shape != tuple(frame_shape):
        raise DataError(f"--dark {path}: shape {dark.shape}, expected {tuple(frame_shape)}")
    return dark.astype(np.float32)


def consume(
    settings: StemSettings, rank: int, ranks: int, rec: Recovered, parts: PartWriter
) -> RankResult:
    """This rank's share of the stream, counted (see the module doc). A message is
    acknowledged only once it is durable in `parts` (its frame's events written, or the
    sector parked); `rec` is what earlier jobs' part files hold."""
    s = settings
    dark = load_dark(s.dark, s.frame_shape)
    asm = Assembler(s.frame_shape, s.sectors, np.clip(np.rint(dark), 0, 65535))
    res = RankResult(rank=rank)
    samples: dict[int, tuple[np.ndarray, int, int]] = {}  # held until thresholds exist
    counter: Counter | None = None
    pending: deque[tuple[int, int] | None] = deque()  # per unreleased message: (frame, sector)
    written: set[int] = set()  # frames whose events are in the part file
    parked: set[tuple[int, int]] = set()  # sectors parked in the part file
    claimed: dict[int, set[int]] = {}  # frames whose parked sectors came back into assembly
    batch = min(RELEASE_BATCH, max(1, s.credit // 4))  # durable messages released at once
    park_at = max(1, s.credit - 2 * s.sectors - batch)  # unreleased messages: park
    ready = 0  # durable messages not yet released
    w = s.frame_shape[1] // s.sectors
    t0 = time.monotonic()

    def record(frame: int, events: np.ndarray, status: int, sectors: int) -> None:
        res.events[frame] = events
        res.status[frame] = status
        parts.events(frame, status, sectors, events)
        written.add(frame)

    def start_counting() -> None:
        """Thresholds from the sample frames, then count them."""
        nonlocal counter
        pix = np.stack([px for px, _, _ in samples.values()])
        th = res.thresholds = thresholds(pix, dark, s.background_sigma, s.xray_sigma)
        counter = Counter(dark, th)
        parts.thresholds(th)
        for f, (px, st, n) in samples.items():
            record(f, counter(px), st, n)
        samples.clear()

    def count(frame: int, pixels: np.ndarray, status: int, sectors: int) -> None:
        if counter is None:
            samples[frame] = (pixels.copy(), status, sectors)
            if len(samples) >= s.threshold_frames:
                start_counting()
            return
        record(frame, counter(pixels), status, sectors)

    def settle(now: bool = False) -> None:
        """Release the oldest messages that are durable (in receive order), once `batch`
        of them are (one flush of the part file for all), or `now`."""
        nonlocal ready
        while pending:
            key = pending[0]
            if key is not None and key[0] not in written and key not in parked:
                break
            pending.popleft()
            ready += 1
        if ready and (now or ready >= batch):
            parts.flush()
            consumer.release(ready)
            ready = 0

    def park(limit: int) -> None:
        """Park the oldest frames' sectors until at most `limit` messages are unreleased."""
        while pending and len(pending) > limit:
            frame = pending[0][0]  # type: ignore[index]  (settled: not None)
            if (p := asm.open.get(frame)) is not None:
                px, have = p.frame, sorted(p.have)
            elif frame in samples:
                px, have = samples[frame][0], list(range(s.sectors))
            else:
                raise AssertionError(f"frame {frame} is neither open nor held")
            head = pending[0]
            for sec in have:
                if (frame, sec) not in parked:
                    parts.park(frame, sec, px[:, sec * w : (sec + 1) * w])
                    parked.add((frame, sec))
            settle(now=True)
            if pending and pending[0] is head:
                raise AssertionError(f"message {head} could not be made durable")

    def claim(frame: int) -> None:
        """The parked sectors of `frame` go back into assembly (it is ours now)."""
        back = rec.parked[frame]
        claimed[frame] = set(back)
        res.recovered_sectors += len(back)
        for sec, px in back.items():
            pixels = asm.add(frame, sec, px)
            if pixels is not None:
                count(frame, pixels, COMPLETE, s.sectors)
                asm.release(pixels)

    def on_idle() -> None:
        settle(now=True)
        park(0)

    consumer: AckedConsumer | ZmqSectorConsumer
    if s.proto == "zmq":
        consumer = ZmqSectorConsumer(s.url, dial_timeout=s.dial_timeout, groups=ranks)
    else:
        consumer = AckedConsumer(
            s.url,
            credit=s.credit,
            dial_timeout=s.dial_timeout,
            groups=ranks,
            manual_ack=True,
            on_idle=on_idle,
        )
    try:
        for _producer, _seq, payload in consumer.messages(lambda: res.messages):
            if not res.messages:
                res.first_message = time.time()
            res.messages += 1
            try:
                sec = decode(payload)
                if not 0 <= sec.sector < s.sectors:
                    raise DataError(
                        f"sector {sec.sector} of frame {sec.frame_number}: no such sector"
                    )
            except DataError as exc:
                res.bad_messages += 1
                log.warning("message %d: %s", res.messages, exc)
                parts.bad()
                pending.append(None)
                settle()
                continue
            frame = sec.frame_number
            if frame in rec.parked and frame not in claimed:
                claim(frame)
            if frame in rec.counted or sec.sector in claimed.get(frame, ()):
                res.recovered_again += 1  # the parts have it (its acknowledgement was lost)
                pending.append(None)
                settle()
                continue
            pixels = asm.add(frame, sec.sector, sec.data)
            pending.append((frame, sec.sector))
            if pixels is not None:
                count(frame, pixels, COMPLETE, s.sectors)
                asm.release(pixels)
            settle()
            if len(pending) + ready >= park_at:
                park(park_at - 2 * s.sectors - batch)
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
    for frame, pixels, missing in asm.incomplete():
        count(frame, pixels, INCOMPLETE, s.sectors - missing)
    if counter is None and samples:
        start_counting()
    res.seconds = time.monotonic() - t0
    res.parked = len(parked)
    return res


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
    the accounting (other ranks None). Each rank reads the part files an earlier job
    writing the same output left (`parts.read_parts`) before any rank writes its own;
    rank 0 merges what they hold and removes them once the file is written."""
    s = settings
    folder = parts_dir(s.output)
    rec = read_parts(folder, s.scan_shape, s.frame_shape, s.sectors)
    tag = comm.allgather(uuid.uuid4().hex[:12])[0]  # also: no rank writes before all read
    parts = PartWriter(
        folder / f"{tag}-rank{comm.rank}.part", s.scan_shape, s.frame_shape, s.sectors
    )
    try:
        res = consume(s, comm.rank, comm.size, rec, parts)
    finally:
        parts.close()
    gathered = comm.gather(res)
    if comm.rank != 0 or gathered is None:
        return None
    return finish(s, rec, gathered)


def merge_parts(settings: CountSettings) -> dict[str, int | float | str]:
    """Write the file from the part files a dead job left, with no stream: its counted
    frames kept, its parked sectors assembled and counted (frames missing sectors
    flagged incomplete), the frames no part file holds reported missing."""
    s = settings
    folder = parts_dir(s.output)
    rec = read_parts(folder, s.scan_shape, s.frame_shape, s.sectors)
    if not rec.files:
        raise DataError(f"no part files in {folder}: nothing to merge")
    return finish(s, rec, [])


def finish(
    s: CountSettings, rec: Recovered, gathered: list[RankResult]
) -> dict[str, int | float | str]:
    """(rank 0) Merge this job's ranks' results (`gathered`, none for a merge) with what
    the part files hold, write the file, remove the part files; the accounting."""
    results = [*gathered, *recovered_results(rec, len(gathered))]
    if not results:  # only parked sectors: their frames are counted by a result of their own
        results.append(RankResult(rank=0))
    leftover = count_leftovers(rec, results, s)
    events, status, counted_by, ths, acc = merge(results, s.scan_shape)
    acc["ranks"] = len(gathered)  # the recovered results are no ranks of this job
    acc["ranks_without_end"] = sum(not r.stream_end for r in gathered)
    acc["recovered_parts"] = rec.files
    acc["recovered_frames"] = len(rec.counted)
    acc["recovered_sectors"] = sum(r.recovered_sectors for r in gathered) + leftover
    acc["recovered_messages"] = rec.messages
    acc["recovered_again"] = sum(r.recovered_again for r in gathered)
    acc["parts_torn"] = rec.torn
    acc["parked"] = sum(r.parked for r in gathered)
    stream = int(acc["stream_messages"])
    got = int(acc["messages"]) - int(acc["recovered_again"]) + rec.messages
    acc["stream_unaccounted"] = max(stream - got, 0) if stream else 0
    firsts = [r.first_message for r in gathered if r.first_message is not None]
    acc["seconds"] = round(time.time() - min(firsts), 3) if firsts else 0.0
    write_counts(s.output, events, s.scan_shape, s.frame_shape, status, counted_by, ths, acc)
    shutil.rmtree(parts_dir(s.output), ignore_errors=True)
    return acc


def recovered_results(rec: Recovered, first: int) -> list[RankResult]:
    """The frames earlier jobs counted, one result per thresholds they used (numbered
    from `first`, after this job's ranks: the file's thresholds rows)."""
    out = [RankResult(rank=first + i, thresholds=th) for i, th in enumerate(rec.thresholds)]
    for frame, c in rec.counted.items():
        out[c.thresholds].events[frame] = c.events
        out[c.thresholds].status[frame] = c.status
    return out


def count_leftovers(rec: Recovered, results: list[RankResult], s: CountSettings) -> int:
    """Count the parked frames no rank of this job took back (no sector of theirs came
    again): complete if every sector was parked, else incomplete. Uses the first
    thresholds at hand (this job's ranks first); the sectors counted are returned."""
    seen = {f for r in results for f in r.status}
    left = {f: secs for f, secs in rec.parked.items() if f not in seen}
    if not left:
        return 0
    dark = load_dark(s.dark, s.frame_shape)
    asm = Assembler(s.frame_shape, s.sectors, np.clip(np.rint(dark), 0, 65535))
    frames: list[tuple[int, np.ndarray, int]] = []
    for frame, secs in sorted(left.items()):
        for sec, px in secs.items():
            pixels = asm.add(frame, sec, px)
            if pixels is not None:
                frames.append((frame, pixels.copy(), COMPLETE))
    frames += [(f, px, INCOMPLETE) for f, px, _ in asm.incomplete()]
    owner = next((r for r in results if r.thresholds is not None), results[0])
    if owner.thresholds is None:  # from a sample, complete frames first (as a rank does)
        sample = sorted(frames, key=lambda f: f[2] != COMPLETE)[: s.threshold_frames]
        pix = np.stack([px for _, px, _ in sample])
        owner.thresholds = thresholds(pix, dark, s.background_sigma, s.xray_sigma)
    count = Counter(dark, owner.thresholds)
    for frame, px, status in frames:
        owner.events[frame] = count(px)
        owner.status[frame] = status
    return sum(len(v) for v in left.values())
