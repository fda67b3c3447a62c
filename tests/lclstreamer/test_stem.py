"""4D-STEM streaming (docs/stem.md): 4 sector producers (`mpirun -n 4 lclstreamer`), one
aggregator (`nngstream --route-by frame_number --delivery acked`), 2 consumer ranks
(`mpirun -n 2 stem-count count`), and the output read by real stempy."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess

import h5py
import msgpack
import numpy as np
import psutil
import pytest

from lclstreamer.errors import ConfigError, DataError
from lclstreamer.models import StemSectorEventSource
from lclstreamer.protocols import StreamContext
from lclstreamer.sources.stem import (
    StemSectorSource,
    dark_reference,
    is_lost,
    make_sector,
    sector_width,
    strikes,
)
from lclstreamer.stem.assembly import Assembler
from lclstreamer.stem.counting import Counter, Thresholds, thresholds
from lclstreamer.stem.parts import PartWriter, parts_dir, read_parts
from lclstreamer.stem.wire import decode
from tests.support.ci import require_module
from tests.support.waiting import wait_until

from ..nngstream.helpers import final_metrics, metrics_lines
from .helpers import BIN, EXAMPLES, MPIRUN, run_cli, write_config

pytestmark = pytest.mark.timeout(240)

SCAN, SHAPE, SECTORS = (32, 32), (128, 128), 4
_TH = Thresholds(mean=0.1, sigma=2.0, background=8.1, xray=20.1, samples=10)


def _cfg(**kw) -> StemSectorEventSource:
    base = {"type": "stem_sectors", "scan_shape": SCAN, "frame_shape": SHAPE, "seed": 3}
    return StemSectorEventSource.model_validate({**base, **kw})


def _frame(cfg: StemSectorEventSource, frame: int, dark: np.ndarray) -> np.ndarray:
    w = sector_width(cfg)
    return np.concatenate(
        [make_sector(cfg, frame, s, dark[:, s * w : (s + 1) * w]) for s in range(cfg.sectors)],
        axis=1,
    )


def _truth(cfg: StemSectorEventSource, frame: int) -> set[int]:
    w, cols = sector_width(cfg), cfg.frame_shape[1]
    return {
        int(r * cols + s * w + c) for s in range(cfg.sectors) for r, c in strikes(cfg, frame, s)
    }


# -- pure parts -------------------------------------------------------------------------
def test_counting_finds_the_injected_electrons():
    cfg = _cfg()
    dark = dark_reference(cfg)
    frames = np.stack([_frame(cfg, f, dark) for f in range(30)])
    th = thresholds(frames[:10], dark, 4.0, 10.0)
    assert abs(th.sigma - cfg.noise) < 0.5 and abs(th.mean) < 0.5
    count = Counter(dark, th)
    injected = found = extra = 0
    for f in range(30):
        truth, got = _truth(cfg, f), set(count(frames[f]).tolist())
        injected += len(truth)
        found += len(truth & got)
        extra += len(got - truth)
    assert injected > 500
    assert found >= 0.95 * injected
    assert extra <= 0.02 * injected


def test_counting_agrees_with_stempy_frame_by_frame():
    require_module("stempy.image", "stempy")
    import stempy.image

    cfg = _cfg(frame_shape=(576, 576))
    dark = dark_reference(cfg)
    frames = [_frame(cfg, f, dark) for f in range(12)]
    th = thresholds(np.stack(frames[:6]), dark, 4.0, 10.0)
    count = Counter(dark, th)
    for f, pixels in enumerate(frames):
        ours = set(count(pixels).tolist())
        theirs = stempy.image.electron_count_frame(
            pixels, darkreference=dark, background_threshold=th.background, xray_threshold=th.xray
        ).data[0, 0]
        theirs = set(np.asarray(theirs).tolist())
        assert len(ours & theirs) >= 0.99 * len(ours | theirs), f"frame {f}"


def test_local_maxima_are_strict_and_edges_count():
    from lclstreamer.stem.counting import Thresholds

    dark = np.zeros((5, 6), np.float32)
    frame = np.zeros((5, 6), np.uint16)
    frame[0, 0] = 30  # an edge pixel counts
    frame[3, 3] = frame[3, 4] = 30  # a tie: neither is a strict maximum
    frame[1, 4] = 200  # above the X-ray threshold: not an electron
    th = Thresholds(mean=0, sigma=1, background=10, xray=100, samples=1)
    assert Counter(dark, th)(frame).tolist() == [0]


def test_sector_message_round_trip_and_bad_messages():
    img = np.arange(12, dtype=np.uint16).reshape(3, 4)
    header = {"scan_number": 2, "frame_number": 7, "sector": 1, "shape": [3, 4], "dtype": "<u2"}
    sec = decode(msgpack.packb(header) + img.tobytes())
    assert (sec.frame_number, sec.sector, sec.scan_number) == (7, 1, 2)
    assert np.array_equal(sec.data, img)
    with pytest.raises(DataError, match="6 bytes of data, expected 24"):
        decode(msgpack.packb(header) + b"\x00" * 6)
    with pytest.raises(DataError, match="bad header"):
        decode(msgpack.packb({"frame_number": 1}) + img.tobytes())
    with pytest.raises(DataError, match="bad header"):
        decode(b"\xc1garbage")
    with pytest.raises(DataError, match="bad header"):
        decode(msgpack.packb({**header, "shape": ["a", 4]}) + img.tobytes())


def test_assembler_completes_flags_and_refuses_duplicates():
    fill = np.full((2, 4), 9, np.uint16)
    asm = Assembler((2, 4), 2, fill)
    a = np.ones((2, 2), np.uint16)
    assert asm.add(5, 0, a) is None
    assert asm.add(5, 0, a) is None and asm.duplicates == 1
    full = asm.add(5, 1, 2 * a)
    assert full is not None and full.tolist() == [[1, 1, 2, 2]] * 2
    asm.release(full)
    assert asm.add(5, 1, a) is None and asm.duplicates == 2  # frame already handed out
    asm.add(6, 1, 3 * a)
    ((frame, pixels, missing),) = asm.incomplete()
    assert (frame, missing) == (6, 1) and pixels.tolist() == [[9, 9, 3, 3]] * 2


def test_sector_draws_are_reproducible_separated_and_poisson_in_count():
    """The per-sector draws: the same (seed, frame, sector) gives the same draws, others
    differ; strikes lie inside the sector, >= MIN_SEPARATION apart; their count has the
    dose's mean and variance (a Poisson count); lost sectors have the configured rate."""
    from lclstreamer.sources.stem import MIN_SEPARATION, NOISE_POOL, sector_draws

    cfg = _cfg(electrons_per_frame=24, sector_loss=0.05)
    w, counts = sector_width(cfg), []
    for frame in range(500):
        for sector in range(cfg.sectors):
            hits, k, shift = sector_draws(cfg, frame, sector)
            assert 0 <= k < NOISE_POOL and 0 <= shift < SHAPE[0]
            assert ((hits >= 0) & (hits < (SHAPE[0], w))).all()
            d = np.abs(hits[:, None, :] - hits[None, :, :]).max(axis=2)
            assert (d[~np.eye(len(hits), dtype=bool)] >= MIN_SEPARATION).all()
            counts.append(len(hits))
    counts = np.array(counts)  # 2000 sectors, mean 6: a 5-sigma band is about +-0.27
    assert abs(counts.mean() - 6) < 0.3 and abs(counts.var() - 6) < 1.5
    a, b = sector_draws(cfg, 7, 1), sector_draws(cfg, 7, 1)
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
    assert not np.array_equal(a[0], sector_draws(cfg, 8, 1)[0])
    assert not np.array_equal(a[0], sector_draws(cfg.model_copy(update={"seed": 4}), 7, 1)[0])
    lost = sum(is_lost(cfg, f, s) for f in range(2000) for s in range(4))
    assert 300 < lost < 500  # 8000 sectors at 5%: 400, 5 sigma is about +-97


@pytest.mark.parametrize("dark_level", [100.0, 0.0])  # 0: pixels below 0 are clipped
def test_sector_pixels_are_dark_plus_rolled_noise_plus_strikes(dark_level):
    """SectorMaker against a plain recomputation: rint(dark) + one rounded noise field of
    the pool rolled by its row shift + rounded strike signal, clipped to uint16."""
    from lclstreamer.sources.stem import SectorMaker, _noise_pool, sector_draws

    cfg = _cfg(dark_level=dark_level, electrons_per_frame=200)
    w, sector = sector_width(cfg), 2
    dark = dark_reference(cfg)[:, sector * w : (sector + 1) * w]
    make = SectorMaker(cfg, sector, dark)
    assert make.direct == (dark_level > 0)
    pool = _noise_pool(cfg.seed, cfg.noise, SHAPE[0], w, sector).astype(np.int64)
    for frame in range(5):
        hits, k, shift = sector_draws(cfg, frame, sector)
        assert np.array_equal(hits, strikes(cfg, frame, sector))
        want = np.rint(dark).astype(np.int64) + np.roll(pool[k], shift, axis=0)
        for r, c in hits:
            want[r, c] += 28
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                if 0 <= r + dr < SHAPE[0] and 0 <= c + dc < w:
                    want[r + dr, c + dc] += 4  # 15% of 28 ADU, rounded
        got = make(frame)
        assert got.dtype == np.uint16 and len(hits) > 20
        assert np.array_equal(got, np.clip(want, 0, 65535)), f"frame {frame}"
    if dark_level == 0:
        assert (got == 0).any()  # clipped, not wrapped around


def test_source_needs_a_multiple_of_the_sector_count():
    with pytest.raises(ConfigError, match="6 ranks cannot share 4 sectors"):
        StemSectorSource(_cfg(), StreamContext(rank=0, size=6, source_identifier="x"))
    with pytest.raises(ValueError, match="divisible by sectors"):
        _cfg(frame_shape=(128, 130))


def test_source_ranks_share_frames_and_skip_lost_sectors():
    cfg = _cfg(sector_loss=0.05)
    seen: dict[int, set[int]] = {}
    lost = 0
    for rank in range(8):
        src = StemSectorSource(cfg, StreamContext(rank=rank, size=8, source_identifier="x"))
        for ev in src.events():
            sector = ev.scalar("sector_index")
            assert sector not in seen.setdefault(ev.index, set())
            seen[ev.index].add(sector)
            assert ev.detector("4dcamera", "raw").shape == (128, 32)
        lost += src.counters()["sectors_lost"]
    n = SCAN[0] * SCAN[1]
    truth_lost = sum(is_lost(cfg, f, s) for f in range(n) for s in range(4))
    assert lost == truth_lost > 0
    assert sum(len(v) for v in seen.values()) == 4 * n - truth_lost


# -- the whole pipeline -----------------------------------------------------------------
def _producer_config(tmp_path, in_url: str, **source) -> tuple:
    cfg = _cfg(sector_loss=0.001, **source)
    data = {
        "source_identifier": "4dcamera:test",
        "event_source": cfg.model_dump(mode="json"),
        "data_sources": {
            "sector": {"type": "detector", "source": "4dcamera"},
            "frame_number": {"type": "scalar", "source": "frame_number", "dtype": "int64"},
            "sector_index": {"type": "scalar", "source": "sector_index", "dtype": "int64"},
            "scan_number": {"type": "scalar", "source": "scan_number", "dtype": "int64"},
        },
        "processing_pipeline": {"type": "batch", "batch_size": 8},
        "data_serializer": {"type": "stem_sector"},
        "data_handlers": [{"type": "nng_push", "urls": [in_url], "mode": "dial"}],
    }
    return cfg, write_config(tmp_path / "producers.yaml", data)


def _start_aggregator(spawn, in_port: int, out_port: int, *extra: str, delivery="acked"):
    buf = spawn(
        [str(BIN / "nngstream"), f"tcp://127.0.0.1:{in_port}", f"tcp://127.0.0.1:{out_port}",
         "--delivery", delivery, "--route-by", "frame_number", "--producers", "4",
         "--metrics-interval", "0.5", *extra],
        name="aggregator",
    )  # fmt: skip
    buf.wait_port(in_port)
    buf.wait_port(out_port)
    return buf


def _start_pipeline(tmp_path, spawn, in_port, out_port, cfg_path, *consumer_extra: str):
    """The aggregator and the 2-rank consumer job, both consumer ranks connected."""
    buf = _start_aggregator(spawn, in_port, out_port)
    cons, out = _start_consumers(tmp_path, spawn, out_port, cfg_path, *consumer_extra)
    wait_until(lambda: any(m.get("consumers") == 2 for m in metrics_lines(buf)), 60, "2 ranks")
    return buf, cons, out


def _start_consumers(
    tmp_path, spawn, out_port, cfg_path, *consumer_extra: str, name="consumers", output=None
):
    """The 2-rank consumer job (`mpirun -n 2 stem-count count`), writing NAME.h5 (or
    `output`)."""
    dark = tmp_path / "dark.npy"
    got = subprocess.run(
        [str(BIN / "stem-count"), "dark", str(cfg_path), "-o", str(dark)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    out = output or tmp_path / f"{name}.h5"
    cons = spawn(
        [MPIRUN, "-n", "2", str(BIN / "stem-count"), "count", f"tcp://127.0.0.1:{out_port}",
         "--scan-shape", str(SCAN[0]), str(SCAN[1]), "--frame-shape", str(SHAPE[0]),
         str(SHAPE[1]), "--dark", str(dark), "-o", str(out), *consumer_extra],
        name=name,
    )  # fmt: skip
    return cons, out


def _rank_process(job, rank: int) -> psutil.Process:
    """The `stem-count` process of MPI rank `rank` under the mpirun `job`."""
    for p in psutil.Process(job.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "count" in p.cmdline() and p.environ().get("PMI_RANK") == str(rank):
                return p
    raise AssertionError(f"no stem-count rank {rank} under mpirun {job.pid}")


def _stop_then_kill_rank_1(buf, job, prod_cmd, spawn, tmp_path) -> None:
    """Run the producers; once both ranks counted frames mid-scan, SIGSTOP rank 1 (its
    frames' keys then hold the stream: still mid-scan), then kill -9 it. Returns the
    producers, which finish (the aggregator holds the rest of the scan)."""
    victim = _rank_process(job, 1)
    prod = spawn(prod_cmd, name="prod")
    folder = parts_dir(tmp_path / "consumers.h5")

    def counted_on_both() -> bool:
        rec = read_parts(folder, SCAN, SHAPE, SECTORS)
        return len(rec.counted) > 40 and len(rec.thresholds) == 2

    wait_until(counted_on_both, 60, "frames counted by both ranks")
    victim.send_signal(signal.SIGSTOP)

    def stalled() -> bool:  # nothing more handed to the job for 3 metrics lines
        lines = metrics_lines(buf)
        return len(lines) > 3 and len({m["sent"] for m in lines[-3:]}) == 1

    wait_until(stalled, 60, "the stream held by the stopped rank")
    n = SCAN[0] * SCAN[1]
    assert metrics_lines(buf)[-1]["sent"] < SECTORS * n - 8  # mid-scan
    victim.send_signal(signal.SIGKILL)
    assert job.wait(60) != 0  # mpirun ends the job when a rank dies
    # rank 0 may take a few more keys between the victim's end and its own
    wait_until(lambda: metrics_lines(buf)[-1]["consumers"] == 0, 30, "the job gone")
    assert prod.wait(120) == 0, prod.stderr()


def _expected_frames(cfg) -> tuple[int, int, int, int]:
    """(complete, incomplete, never seen, sectors sent) of the whole scan."""
    n = SCAN[0] * SCAN[1]
    lost = [sum(is_lost(cfg, f, s) for s in range(SECTORS)) for f in range(n)]
    return (
        sum(v == 0 for v in lost),
        sum(0 < v < SECTORS for v in lost),
        sum(v == SECTORS for v in lost),
        SECTORS * n - sum(lost),
    )


@pytest.mark.mpi
def test_a_killed_consumer_rank_loses_nothing_with_acknowledged_delivery(
    tmp_path, spawn, free_port
):
    """kill -9 of one consumer rank mid-scan (after both ranks counted frames), acked
    delivery. mpirun ends the whole job; a second job writing the same output merges the
    dead job's part files (its counted frames kept, its parked sectors assembled again),
    gets from the aggregator what the dead job had not acknowledged, and writes one file
    where every frame sent is accounted for once: nothing lost, nothing counted twice."""
    in_port, out_port = free_port(), free_port()
    cfg, cfg_path = _producer_config(tmp_path, f"tcp://127.0.0.1:{in_port}")
    buf, first, out = _start_pipeline(tmp_path, spawn, in_port, out_port, cfg_path)
    prod_cmd = [MPIRUN, "-n", "4", str(BIN / "lclstreamer"), "-c", str(cfg_path)]
    _stop_then_kill_rank_1(buf, first, prod_cmd, spawn, tmp_path)
    folder = parts_dir(out)
    dead = read_parts(folder, SCAN, SHAPE, SECTORS)
    assert dead.files == 2 and dead.counted

    second, _ = _start_consumers(tmp_path, spawn, out_port, cfg_path, name="second", output=out)
    assert second.wait(120) == 0, second.stderr()
    assert buf.wait(60) == 0, buf.stderr()
    acc = json.loads(second.stdout().strip().splitlines()[-1])
    complete, incomplete, never, sent = _expected_frames(cfg)
    m = final_metrics(buf)
    assert m["redelivered"] > 0 and m["recvd"] == sent and m["lost_max"] == 0
    assert acc["frames_complete"] == complete and acc["frames_incomplete"] == incomplete
    assert acc["frames_missing"] == never and acc["frames_double"] == 0
    assert acc["stream_messages"] == sent and acc["stream_unaccounted"] == 0
    assert acc["recovered_parts"] == 2 and acc["recovered_frames"] == len(dead.counted)
    assert acc["messages"] - acc["recovered_again"] + acc["recovered_messages"] == sent
    assert acc["messages"] < sent  # the dead job's durable share was not sent again
    assert "stem-count: loss" not in second.stderr()
    assert f"recovered from 2 part file(s): {len(dead.counted)} counted frame(s)" in (
        second.stderr()
    )
    assert not folder.exists()  # merged into the file, then removed

    with h5py.File(out) as f:
        status = f["stream_accounting/frame_status"][()]
        counted_by = f["stream_accounting/counted_by"][()]
        ths = f["stream_accounting/thresholds"][()]
        events = list(f["electron_events/frames"][()])
    # the dead job's frames keep the thresholds they were counted with (rows 2, 3)
    assert len(ths) == 4 and set(counted_by[status > 0].tolist()) >= {0, 1, 2, 3}
    injected = found = 0
    for fr in np.flatnonzero(status == 1):
        truth = _truth(cfg, int(fr))
        injected += len(truth)
        found += len(truth & set(events[fr].tolist()))
    assert found >= 0.95 * injected
    # a recovered frame holds the events its thresholds give on the true pixels
    dark = dark_reference(cfg)
    for fr in list(dead.counted)[:5]:
        bg, xr = ths[counted_by[fr]]
        assert counted_by[fr] >= 2
        th = Thresholds(mean=0, sigma=1, background=bg, xray=xr, samples=1)
        want = set(Counter(dark, th)(_frame(cfg, fr, dark)).tolist())
        if status[fr] == 1:
            assert set(events[fr].tolist()) == want, f"frame {fr}"


@pytest.mark.mpi
def test_a_killed_consumer_rank_at_most_once_loses_frames_and_the_loss_is_reported(
    tmp_path, spawn, free_port
):
    """The same kill at at-most-once delivery (keyed routing without `--delivery
    acked`): the aggregator frees each message once sent, so what the dead job held in
    memory is gone; the next job merges the dead job's part files, counts every frame
    it can, flags the frames missing sectors, and reports how many of the stream's
    messages it neither received nor recovered (no more than the aggregator's lost_max)."""
    in_port, out_port = free_port(), free_port()
    cfg, cfg_path = _producer_config(tmp_path, f"tcp://127.0.0.1:{in_port}")
    buf = _start_aggregator(spawn, in_port, out_port, delivery="at-most-once")
    first, out = _start_consumers(tmp_path, spawn, out_port, cfg_path)
    wait_until(lambda: any(m.get("consumers") == 2 for m in metrics_lines(buf)), 60, "2 ranks")
    prod_cmd = [MPIRUN, "-n", "4", str(BIN / "lclstreamer"), "-c", str(cfg_path)]
    _stop_then_kill_rank_1(buf, first, prod_cmd, spawn, tmp_path)

    second, _ = _start_consumers(tmp_path, spawn, out_port, cfg_path, name="second", output=out)
    assert second.wait(120) == 0, second.stderr()
    assert buf.wait(60) == 0, buf.stderr()
    acc = json.loads(second.stdout().strip().splitlines()[-1])
    _complete, _incomplete, _never, sent = _expected_frames(cfg)
    m = final_metrics(buf)
    assert m["redelivered"] == 0 and m["lost_max"] > 0 and m["recvd"] == sent
    n = SCAN[0] * SCAN[1]
    assert acc["stream_messages"] == sent and acc["lost_max"] == m["lost_max"]
    assert 0 < acc["stream_unaccounted"] <= m["lost_max"]
    assert acc["frames_complete"] + acc["frames_incomplete"] + acc["frames_missing"] == n
    assert acc["frames_double"] == 0 and acc["recovered_parts"] == 2
    assert f"{acc['stream_unaccounted']} of the stream's {sent} message(s) neither" in (
        second.stderr()
    )
    with h5py.File(out) as f:  # the second job's 2 ranks were waited for: both counted
        assert set(f["stream_accounting/counted_by"][()].tolist()) >= {0, 1}


@pytest.mark.mpi
def test_frames_an_earlier_job_stored_are_kept_and_their_sectors_dropped(
    tmp_path, spawn, free_port
):
    """The acknowledgement was lost: an earlier job stored frame A's events and parked
    sector 0 of frame B, and the aggregator sends all of them again. The job keeps A's
    stored events (not recounted: counted with the stored thresholds), drops the sectors
    the parts hold (`recovered_again`), counts B from the parked sector and the rest, and
    every message of the stream is accounted for once."""
    in_port, out_port = free_port(), free_port()
    cfg, cfg_path = _producer_config(tmp_path, f"tcp://127.0.0.1:{in_port}")
    n = SCAN[0] * SCAN[1]
    a, b = [f for f in range(n) if not any(is_lost(cfg, f, s) for s in range(SECTORS))][:2]
    out = tmp_path / "consumers.h5"
    w = PartWriter(parts_dir(out) / "earlier-rank1.part", SCAN, SHAPE, SECTORS)
    w.thresholds(_TH)
    w.events(a, 1, SECTORS, np.array([1, 2, 3], np.uint32))
    w.park(b, 0, np.full((SHAPE[0], SHAPE[1] // SECTORS), 7, np.uint16))
    w.close()

    buf, cons, out = _start_pipeline(tmp_path, spawn, in_port, out_port, cfg_path)
    prod = run_cli(["-c", str(cfg_path)], ranks=4, timeout=180)
    assert prod.code == 0, prod.stderr
    assert cons.wait(120) == 0, cons.stderr()
    assert buf.wait(60) == 0, buf.stderr()
    acc = json.loads(cons.stdout().strip().splitlines()[-1])
    complete, incomplete, never, sent = _expected_frames(cfg)
    assert (acc["frames_complete"], acc["frames_incomplete"]) == (complete, incomplete)
    assert acc["frames_missing"] == never and acc["frames_double"] == 0
    assert acc["messages"] == sent and acc["recovered_again"] == SECTORS + 1
    assert acc["recovered_frames"] == 1 and acc["recovered_sectors"] == 1
    assert acc["stream_unaccounted"] == 0 and "stem-count: loss" not in cons.stderr()
    with h5py.File(out) as f:
        events = f["electron_events/frames"]
        assert events[a].tolist() == [1, 2, 3]
        assert f["stream_accounting/counted_by"][a] == 2  # the row after the 2 ranks
        assert f["stream_accounting/thresholds"][2].tolist() == [_TH.background, _TH.xray]
    assert not parts_dir(out).exists()


@pytest.mark.mpi
def test_four_producers_one_aggregator_two_consumer_ranks(tmp_path, spawn, free_port):
    in_port, out_port = free_port(), free_port()
    cfg, cfg_path = _producer_config(tmp_path, f"tcp://127.0.0.1:{in_port}")
    buf, cons, out = _start_pipeline(tmp_path, spawn, in_port, out_port, cfg_path)
    prod = run_cli(["-c", str(cfg_path)], ranks=4, timeout=180)
    assert prod.code == 0, prod.stderr
    assert cons.wait(120) == 0, cons.stderr()
    assert buf.wait(60) == 0, buf.stderr()
    acc = json.loads(cons.stdout().strip().splitlines()[-1])

    n = SCAN[0] * SCAN[1]
    lost = {(f, s) for f in range(n) for s in range(SECTORS) if is_lost(cfg, f, s)}
    assert lost, "the seed must lose some sectors for this test to mean anything"
    per_frame = {f: sum((f, s) in lost for s in range(SECTORS)) for f in range(n)}
    # every frame accounted for, none twice
    assert acc["frames_double"] == 0 and acc["duplicates"] == 0
    assert acc["frames_missing"] == sum(v == SECTORS for v in per_frame.values())
    assert acc["frames_incomplete"] == sum(0 < v < SECTORS for v in per_frame.values())
    assert acc["frames_complete"] + acc["frames_incomplete"] + acc["frames_missing"] == n
    assert acc["messages"] == acc["messages_expected"] == SECTORS * n - len(lost)

    with h5py.File(out) as f:
        status = f["stream_accounting/frame_status"][()]
        counted_by = f["stream_accounting/counted_by"][()]
        ths = f["stream_accounting/thresholds"][()]
        events = list(f["electron_events/frames"][()])
    for fr, v in per_frame.items():
        assert status[fr] == (1 if v == 0 else 2 if v < SECTORS else 0), f"frame {fr}"
    assert set(counted_by[status > 0].tolist()) == {0, 1}  # both ranks counted

    # >= 95% of injected strikes recovered in complete frames
    injected = found = 0
    for fr in np.flatnonzero(status == 1):
        truth = _truth(cfg, int(fr))
        injected += len(truth)
        found += len(truth & set(events[fr].tolist()))
    assert found >= 0.95 * injected

    # real stempy reads the file, and its own counting agrees on the assembled frames
    require_module("stempy.io", "stempy")
    import stempy.image
    import stempy.io

    arr = stempy.io.load_electron_counts(str(out))
    assert tuple(int(x) for x in arr.scan_shape) == (SCAN[1], SCAN[0])
    assert tuple(int(x) for x in arr.frame_shape) == SHAPE
    dark = dark_reference(cfg)
    for fr in np.flatnonzero(status == 1)[::8]:
        bg, xr = ths[counted_by[fr]]
        pixels = _frame(cfg, int(fr), dark)
        theirs = stempy.image.electron_count_frame(
            pixels, darkreference=dark, background_threshold=bg, xray_threshold=xr
        ).data[0, 0]
        a, b = set(np.asarray(arr.data[fr, 0]).tolist()), set(np.asarray(theirs).tolist())
        assert len(a & b) >= 0.99 * len(a | b), f"frame {fr}"


@pytest.mark.mpi
def test_no_consumer_job_spills_and_a_late_job_counts_every_frame(tmp_path, spawn, free_port):
    """Fallback to disk: no consumer group connected while the scan is taken, so the
    aggregator spills (`--spill`, memory bound far below the scan); a consumer job that
    arrives after the producers have finished gets every sector and counts every frame."""
    in_port, out_port = free_port(), free_port()
    cfg, cfg_path = _producer_config(tmp_path, f"tcp://127.0.0.1:{in_port}")
    buf = _start_aggregator(
        spawn, in_port, out_port, "--spill", str(tmp_path / "spill"), "--max-bytes", "1MiB"
    )
    prod = run_cli(["-c", str(cfg_path)], ranks=4, timeout=180)  # never blocked: it ends
    assert prod.code == 0, prod.stderr
    n = SCAN[0] * SCAN[1]
    lost = sum(is_lost(cfg, f, s) for f in range(n) for s in range(SECTORS))
    wait_until(lambda: metrics_lines(buf)[-1]["recvd"] == SECTORS * n - lost, 30, "all received")
    held = metrics_lines(buf)[-1]
    assert held["consumers"] == 0 and held["spill_held"] > 0.9 * held["recvd"], held

    cons, out = _start_consumers(tmp_path, spawn, out_port, cfg_path)
    assert cons.wait(120) == 0, cons.stderr()
    assert buf.wait(60) == 0, buf.stderr()
    acc = json.loads(cons.stdout().strip().splitlines()[-1])
    assert acc["messages"] == acc["messages_expected"] == SECTORS * n - lost
    assert acc["frames_double"] == 0 and acc["duplicates"] == 0 and acc["lost_max"] == 0
    per_frame = {f: sum(is_lost(cfg, f, s) for s in range(SECTORS)) for f in range(n)}
    assert acc["frames_complete"] == sum(v == 0 for v in per_frame.values())
    assert acc["frames_incomplete"] == sum(0 < v < SECTORS for v in per_frame.values())
    with h5py.File(out) as f:
        counted_by = f["stream_accounting/counted_by"][()]
    # the job announced its 2 ranks: keys were spread over both, not all to the first
    assert set(counted_by[counted_by >= 0].tolist()) == {0, 1}
    m = final_metrics(buf)
    assert m["spilled"] > 0 and m["spill_held"] == 0 and m["sent"] == SECTORS * n - lost


def test_example_config_is_valid():
    got = run_cli(["--validate", "-c", str(EXAMPLES / "stem-sectors.yaml")])
    assert got.code == 0, got.stderr


@pytest.mark.mpi
@pytest.mark.parametrize("transport", ["acked", "zmq"])
def test_the_example_runs_with_one_command(tmp_path, transport):
    """lclstreamer/examples/stem-electron-count.sh: producers, aggregator, consumers, over
    NNG with acked delivery (the default) or over ZMQ (TRANSPORT=zmq)."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "SCAN": "8 8", "FRAME": "64 64",
           "TRANSPORT": transport}  # fmt: skip
    got = subprocess.run(
        ["bash", str(EXAMPLES / "stem-electron-count.sh"), str(tmp_path / "run")],
        capture_output=True, text=True, timeout=200, env=env, start_new_session=True,
    )  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    line = next(x for x in got.stdout.splitlines() if x.startswith("accounting: "))
    acc = json.loads(line.removeprefix("accounting: "))
    assert acc["frames"] == 64 and acc["frames_double"] == 0
    assert acc["frames_complete"] + acc["frames_incomplete"] + acc["frames_missing"] == 64
    assert (tmp_path / "run" / "counts.h5").is_file()
    producers = (tmp_path / "run" / "producers.yaml").read_text()
    assert ("zmq_push" in producers) == (transport == "zmq")


def test_the_example_refuses_an_unknown_transport(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TRANSPORT": "udp"}
    got = subprocess.run(
        ["bash", str(EXAMPLES / "stem-electron-count.sh"), str(tmp_path / "run")],
        capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip
    assert got.returncode == 2
    assert got.stderr.strip() == "stem-electron-count: TRANSPORT=udp: choose acked or zmq"


def _merge(tmp_path, out, *extra: str) -> subprocess.CompletedProcess:
    """`stem-count merge` of the part files next to `out` (this module's geometry)."""
    dark = tmp_path / "dark.npy"
    np.save(dark, dark_reference(_cfg()))
    return subprocess.run(
        [str(BIN / "stem-count"), "merge", "--scan-shape", *map(str, SCAN), "--frame-shape",
         *map(str, SHAPE), "--dark", str(dark), "-o", str(out), *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _park(w: PartWriter, cfg, frame: int, sectors) -> None:
    sw, dark = SHAPE[1] // SECTORS, dark_reference(cfg)
    for s in sectors:
        w.park(frame, s, make_sector(cfg, frame, s, dark[:, s * sw : (s + 1) * sw]))


def test_merge_writes_the_file_from_a_dead_jobs_part_files(tmp_path):
    """No stream: `stem-count merge` keeps the counted frame of one part file, assembles
    and counts the parked sectors of another (a frame with all its sectors complete, one
    with two of four incomplete, with the stored thresholds), reports every other frame
    of the scan missing, writes the file stempy reads, and removes the part files."""
    cfg, out = _cfg(), tmp_path / "c.h5"
    a, b, c = 3, 5, 9
    w = PartWriter(parts_dir(out) / "dead-rank0.part", SCAN, SHAPE, SECTORS)
    w.thresholds(_TH)
    w.events(a, 1, SECTORS, np.array([1, 2, 3], np.uint32))
    w.close()
    w = PartWriter(parts_dir(out) / "dead-rank1.part", SCAN, SHAPE, SECTORS)
    _park(w, cfg, b, range(SECTORS))
    _park(w, cfg, c, (0, 2))
    w.close()
    dark = dark_reference(cfg)

    got = _merge(tmp_path, out)
    assert got.returncode == 0, got.stderr
    acc = json.loads(got.stdout.strip().splitlines()[-1])
    n = SCAN[0] * SCAN[1]
    assert (acc["frames_complete"], acc["frames_incomplete"]) == (2, 1)
    assert acc["frames_missing"] == n - 3 and acc["frames_double"] == 0
    assert acc["recovered_parts"] == 2 and acc["recovered_frames"] == 1
    assert acc["recovered_sectors"] == SECTORS + 2 and acc["ranks"] == 0
    assert f"stem-count: loss: {n - 3} of the scan's {n} frame(s) are in no part file" in (
        got.stderr
    )
    assert not parts_dir(out).exists()
    with h5py.File(out) as f:
        events = f["electron_events/frames"]
        assert events[a].tolist() == [1, 2, 3]
        want = Counter(dark, _TH)(_frame(cfg, b, dark))
        assert events[b].tolist() == want.tolist() and len(want) > 0
        status = f["stream_accounting/frame_status"][:]
        assert (status[a], status[b], status[c]) == (1, 1, 2) and (status == 0).sum() == n - 3
    require_module("stempy.io", "stempy")
    import stempy.io

    arr = stempy.io.load_electron_counts(str(out))
    assert tuple(int(x) for x in arr.frame_shape) == SHAPE
    assert set(np.asarray(arr.data[a, 0]).tolist()) == {1, 2, 3}


def test_merge_of_parked_sectors_alone_takes_thresholds_from_a_sample(tmp_path):
    """No part file has thresholds (the dead job parked every sector it got): merge
    takes them from the first --threshold-frames complete frames, as a rank does."""
    cfg, out = _cfg(), tmp_path / "c.h5"
    w = PartWriter(parts_dir(out) / "dead-rank0.part", SCAN, SHAPE, SECTORS)
    _park(w, cfg, 4, (1, 3))  # incomplete: not in the sample
    for frame in (7, 2, 11):
        _park(w, cfg, frame, range(SECTORS))
    w.close()
    got = _merge(tmp_path, out, "--threshold-frames", "2")
    assert got.returncode == 0, got.stderr
    acc = json.loads(got.stdout.strip().splitlines()[-1])
    assert (acc["frames_complete"], acc["frames_incomplete"]) == (3, 1)
    dark = dark_reference(cfg)
    th = thresholds(np.stack([_frame(cfg, f, dark) for f in (2, 7)]), dark, 4.0, 10.0)
    with h5py.File(out) as f:
        assert f["stream_accounting/thresholds"][0].tolist() == pytest.approx(
            [th.background, th.xray]
        )
        assert (
            f["electron_events/frames"][11].tolist()
            == Counter(dark, th)(_frame(cfg, 11, dark)).tolist()
        )


def test_merge_without_part_files_or_with_another_geometry_is_one_error_line(tmp_path):
    out = tmp_path / "c.h5"
    got = _merge(tmp_path, out)
    assert got.returncode == 1 and not out.exists()
    assert got.stderr.strip().splitlines() == [
        f"stem-count: error: no part files in {parts_dir(out)}: nothing to merge"
    ]
    w = PartWriter(parts_dir(out) / "other.part", (4, 4), SHAPE, SECTORS)
    w.close()
    got = _merge(tmp_path, out)
    assert got.returncode == 1 and not out.exists() and "Traceback" not in got.stderr
    (line,) = [x for x in got.stderr.splitlines() if x.startswith("stem-count: error:")]
    assert "other.part" in line
    assert parts_dir(out).exists()  # nothing merged: the part files stay


@pytest.mark.parametrize(
    "dark, expect",
    [
        ("missing.npy", "--dark {d}: cannot read a .npy array"),
        ("wrong.npy", "--dark {d}: shape (3, 3), expected (128, 128)"),
    ],
)
def test_consumer_errors_are_one_line(tmp_path, dark, expect):
    np.save(tmp_path / "wrong.npy", np.zeros((3, 3)))
    d = tmp_path / dark
    got = subprocess.run(
        [str(BIN / "stem-count"), "count", "tcp://127.0.0.1:9", "--scan-shape", "2", "2",
         "--frame-shape", "128", "128", "--dark", str(d), "-o", str(tmp_path / "c.h5")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert got.returncode == 1
    lines = [x for x in got.stderr.splitlines() if x.startswith("stem-count: error:")]
    assert lines == [lines[0]] and expect.format(d=d) in lines[0], got.stderr
    assert "Traceback" not in got.stderr


def test_dark_refuses_a_config_without_stem_sectors(tmp_path):
    got = subprocess.run(
        [str(BIN / "stem-count"), "dark", str(EXAMPLES / "tmo-tof.yaml"), "-o", "x.npy"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert got.returncode == 2
    assert "event_source.type is 'synthetic_tof', not stem_sectors" in got.stderr


_LOCKSTEP_RANK = """
import json, sys, time
from lclstreamer.models import StemSectorEventSource
from lclstreamer.mpi import world
from lclstreamer.protocols import StreamContext
from lclstreamer.sources.stem import StemSectorSource

comm = world()
cfg = StemSectorEventSource(type="stem_sectors", scan_shape=(6, 7), frame_shape=(12, 16),
                            lockstep=3)
src = StemSectorSource(cfg, StreamContext(comm.rank, comm.size, "x", comm=comm))
spans = []
for i, ev in enumerate(src.events()):
    t0 = time.monotonic()
    if comm.rank == 2:
        time.sleep(0.02)  # the slow receiving server: the others must wait for it
    spans.append((ev.index, t0, time.monotonic()))
    if comm.rank == int(sys.argv[1]) and i == 4:
        break  # this rank stops early: the others must not wait for it
with open(f"{sys.argv[2]}/rank{comm.rank}.json", "w") as f:
    json.dump(spans, f)
comm.allgather(None)
"""


@pytest.mark.parametrize("leaver", [-1, 1])
def test_producer_ranks_keep_in_step_and_one_that_stops_early_holds_nobody(tmp_path, leaver):
    """Real MPI (4 ranks, rank 2 slow): a rank starts round k (frames 3k..3k+2 of its
    slot) only once every rank finished round k-1; a rank leaving early holds nobody."""
    out = subprocess.run(
        [MPIRUN, "-n", "4", BIN / "python", "-c", _LOCKSTEP_RANK, str(leaver), tmp_path],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    round_of = lambda frame: frame // 3  # noqa: E731  (4 ranks, 4 sectors: one slot)
    for r, spans in enumerate(ranks):
        assert len(spans) == (5 if r == leaver else 42)
    for spans in ranks:
        for frame, start, _ in spans:
            k = round_of(frame)
            for other, theirs in enumerate(ranks):
                if other == leaver or not k:
                    continue
                ends = [end for f, _, end in theirs if round_of(f) == k - 1]
                assert start >= max(ends), (frame, other)
