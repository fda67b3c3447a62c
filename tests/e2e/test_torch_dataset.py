"""`StreamDataset` with real torch (2.13.0 CPU) through the real stack (mTLS, psik-api,
nngstream, `mpirun -n 2 lclstreamer`): DataLoader workers and training processes as
separate consumers of one transfer, epoch mode over the client cache, failures and
early stops. Reference arrays: the same synthetic configuration run locally into files
(the source's own output)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.support.ci import require_module
from tests.support.ports import free_port
from tests.support.suite import Suite, assert_same, pipeline, source_events

pytestmark = pytest.mark.timeout(300)


TORCH = "'lclstream-suite[torch]' (torch==2.13.0, the CPU wheel)"


@pytest.fixture(scope="module")
def fresh():
    """A multiprocessing context for the DataLoader workers of a live dataset in this
    pytest process: NNG aborts a forked child whose parent opened NNG sockets ("nng is not
    fork-reentrant safe"), and earlier tests here did. A forkserver (a clean process,
    started once, with the modules preloaded so workers start at once). Default fork,
    from a process that never opened NNG, is covered by the two-rank test."""
    import multiprocessing

    require_module("torch", TORCH)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["lclstream_api.client.torch", __name__])
    from torch.utils.data import DataLoader

    list(DataLoader(range(2), num_workers=1, multiprocessing_context=ctx))  # server up now
    yield ctx
    import os
    import signal
    import threading
    from multiprocessing import forkserver

    server = forkserver._forkserver  # the server process this fixture started
    pid = server._forkserver_pid
    stop = threading.Thread(target=server._stop, daemon=True)
    stop.start()
    stop.join(30)
    if stop.is_alive() and pid is not None:  # still serving a worker: end it by its pid
        os.kill(pid, signal.SIGKILL)
        stop.join(10)


@pytest.fixture(autouse=True)
def _torch():
    require_module("torch", TORCH)


@pytest.fixture
def suite(pki, spawn, tmp_path):
    return Suite(pki, spawn, tmp_path, ["lclstream"])


def tag_worker(event: dict) -> dict:
    """transform: which DataLoader worker produced the event."""
    from torch.utils.data import get_worker_info

    return {**event, "worker": get_worker_info().id}


def collect(batches) -> dict[int, dict[str, np.ndarray]]:
    """Collated DataLoader batches -> event index -> numpy fields (each index once)."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for b in batches:
        for i, idx in enumerate(b["index"].tolist()):
            assert idx not in out, f"event {idx} twice"
            out[idx] = {name: b[name][i].numpy() for name in ("frames", "index")}
    return out


def test_importing_the_client_does_not_import_torch():
    code = "import sys, lclstream_api.client; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_dataloader_with_two_workers_sees_each_event_once(suite, fresh):
    from torch.utils.data import DataLoader

    from lclstream_api.client import ClientError
    from lclstream_api.client.torch import StreamDataset

    cfg = pipeline(96, rate_hz=16)  # seconds: both workers are there before the end
    want = source_events(cfg, suite.root)
    ds = StreamDataset(cfg, certified=suite.pki.client, producers=2, transform=tag_worker)
    created = [r for r in suite.requests_from("cn:client") if r.startswith("POST")]
    batches = list(DataLoader(ds, batch_size=4, multiprocessing_context=fresh, num_workers=2))
    assert {tuple(b["frames"].shape[1:]) for b in batches} == {(2, 64, 64)}
    workers = {w for b in batches for w in b["worker"].tolist()}
    assert workers == {0, 1}, "both workers consumed batches of the transfer"
    assert_same(collect(batches), want)  # disjoint, whole run, equal to the source
    # one transfer: created by the constructor, never by the workers
    assert [r for r in suite.requests_from("cn:client") if r.startswith("POST")] == created
    with suite.client() as client:
        assert suite.wait_final(client, ds.transfer.id)["state"] == "completed"
    # the transfer is over: a consumer starting now gets nothing; a second pass in one
    # process is refused (a live dataset is one epoch)
    assert list(DataLoader(ds, batch_size=4, num_workers=0)) == []
    with pytest.raises(ClientError, match="received once per process"):
        list(DataLoader(ds, batch_size=4, num_workers=0))
    ds.close()


def test_whole_batches_and_a_bare_url_consumer(suite, fresh):
    """per_event=False yields Batches (DataLoader(batch_size=None) turns arrays into
    tensors); a consumer joining by URLs alone shares the transfer."""
    import threading

    import torch
    from torch.utils.data import DataLoader

    from lclstream_api.client.torch import StreamDataset

    cfg = pipeline(64, rate_hz=16)
    ds = StreamDataset(cfg, certified=suite.pki.client, producers=2, per_event=False)
    bare = StreamDataset.join(ds.source.urls, config=cfg, per_event=False)
    other: list = []
    t = threading.Thread(target=lambda: other.extend(bare))
    t.start()
    mine = list(DataLoader(ds, batch_size=None, multiprocessing_context=fresh, num_workers=1))
    t.join(120)
    assert mine and other, "both consumers received batches"
    assert all(isinstance(b["frames"], torch.Tensor) and b["frames"].shape[1:] == (2, 64, 64)
               for b in mine)  # fmt: skip
    idx = [int(i) for b in mine for i in b["index"]] + [int(i) for b in other for i in b["index"]]
    assert sorted(idx) == list(range(64))


RANK = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch.distributed as dist
    from torch.utils.data import DataLoader
    from lclstream_api.client.torch import StreamDataset

    rank, port, certified, cfg, out = sys.argv[1:]
    rank = int(rank)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    ds = StreamDataset.distributed(json.loads(open(cfg).read()), certified=certified,
                                   producers=2)
    idx, frames = [], []
    for b in DataLoader(ds, batch_size=4, num_workers=1):
        idx.extend(b["index"].tolist())
        frames.append(b["frames"].numpy())
    np.savez(out, index=np.array(idx, dtype=np.int64),
             frames=np.concatenate(frames) if frames else np.zeros((0, 2, 64, 64), "f4"))
    print(json.dumps({"rank": rank, "transfer": ds.source.transfer, "events": len(idx),
                      "owner": ds.transfer is not None}))
    dist.destroy_process_group()
    """
)


def test_two_training_processes_are_separate_consumers(suite, spawn):
    """Two torch.distributed (gloo) ranks: rank 0 starts the transfer and broadcasts its
    Source, rank 1 joins; each rank's events are disjoint and their union is the run."""
    cfg = pipeline(64, rate_hz=40)
    want = source_events(cfg, suite.root)
    script, cfg_path = suite.root / "rank.py", suite.root / "cfg.json"
    script.write_text(RANK)
    cfg_path.write_text(json.dumps(cfg))
    port = free_port()
    procs = [
        spawn(
            [
                sys.executable,
                script,
                rank,
                port,
                suite.pki.client,
                cfg_path,
                suite.root / f"rank{rank}.npz",
            ],
            name=f"rank{rank}",
        )  # fmt: skip
        for rank in (0, 1)
    ]
    for p in procs:
        assert p.wait(240) == 0, p.stderr()
    said = [json.loads(p.stdout().splitlines()[-1]) for p in procs]
    assert said[0]["transfer"] == said[1]["transfer"]
    assert [s["owner"] for s in said] == [True, False]
    assert all(s["events"] > 0 for s in said), said
    got: dict[int, dict[str, np.ndarray]] = {}
    for rank in (0, 1):
        with np.load(suite.root / f"rank{rank}.npz") as z:
            for i, idx in enumerate(z["index"].tolist()):
                assert idx not in got, f"event {idx} reached both ranks"
                got[idx] = {"frames": z["frames"][i], "index": z["index"][i]}
    assert_same(got, want)
    assert [r for r in suite.requests_from("cn:client") if r.startswith("POST")] == [
        "POST /transfers"
    ]


def test_epoch_mode_replays_the_cache_sharded_without_the_server(suite):
    from torch.utils.data import DataLoader

    from lclstream_api.client import CacheError
    from lclstream_api.client.torch import StreamDataset

    cfg = pipeline(40)
    want = source_events(cfg, suite.root)
    cache = suite.root / "cache"
    with pytest.raises(CacheError, match="no entry"):
        StreamDataset(cfg, certified=suite.pki.client, cache=cache, fill=False)
    ds = StreamDataset(cfg, certified=suite.pki.client, cache=cache, producers=2)
    assert not ds.from_cache and ds.cache_entry.manifest.events == 40
    before = suite.requests_from("cn:client")
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    epoch1, epoch2 = collect(loader), collect(loader)
    assert_same(epoch1, want)
    assert_same(epoch2, epoch1)
    # a new dataset of the same config: found in the cache, as two ranks of two workers
    ranks = [StreamDataset(cfg, certified=suite.pki.client, cache=cache, rank=r, world_size=2)
             for r in (0, 1)]  # fmt: skip
    assert all(r.from_cache for r in ranks)
    parts = [collect(DataLoader(r, batch_size=4, num_workers=2)) for r in ranks]
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    assert_same({**parts[0], **parts[1]}, want)
    again = [collect(DataLoader(r, batch_size=4, num_workers=2)) for r in ranks]
    assert [sorted(p) for p in again] == [sorted(p) for p in parts]  # deterministic shards
    assert suite.requests_from("cn:client") == before  # no request reached the server


def test_a_failed_transfer_raises_through_the_dataloader(suite, fresh):
    from torch.utils.data import DataLoader

    from lclstream_api.client import TransferFailed
    from lclstream_api.client.torch import StreamDataset

    cfg = pipeline(10)
    cfg["event_source"] = {"type": "hdf5", "files": ["/nonexistent/run7.h5"],
                           "datasets": {"det": "/data"}}  # fmt: skip
    ds = StreamDataset(cfg, certified=suite.pki.client, producers=2)
    with pytest.raises(TransferFailed, match="failed: .*/nonexistent/run7.h5"):
        for _ in DataLoader(ds, batch_size=4, multiprocessing_context=fresh, num_workers=2):
            pass


def test_closing_or_dropping_the_dataset_cancels_the_transfer(suite, fresh):
    from torch.utils.data import DataLoader

    from lclstream_api.client.torch import StreamDataset

    cfg = pipeline(4000, rate_hz=50)
    ds = StreamDataset(cfg, certified=suite.pki.client, producers=2)
    it = iter(DataLoader(ds, batch_size=4, multiprocessing_context=fresh, num_workers=2))
    first = next(it)
    assert first["frames"].shape == (4, 2, 64, 64)
    del it  # the workers stop; the transfer goes on until its owner closes
    gc.collect()
    with suite.client() as client:
        assert client.get(f"/transfers/{ds.transfer.id}").json()["state"] == "streaming"
    ds.close()
    dropped = StreamDataset(cfg, certified=suite.pki.client, producers=2)
    never = dropped.transfer.id
    del dropped
    gc.collect()
    suite.assert_canceled_by_user([ds.transfer.id, never])
    assert f"DELETE /transfers/{never}" in suite.requests_from("cn:client")


def test_the_documented_training_loop_runs(suite):
    """docs/lclstream_api.md's PyTorch example, run as written in a fresh process as the
    user (CERTIFIED_CONFIG), from a directory of its own: 3 epochs of the 64 events, the
    last two replayed from the cache it filled."""
    import os
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "lclstream_api.md").read_text()
    code = re.search(r"<!-- example: torch-training -->\n```python\n(.*?)```", doc, re.S)
    assert code, "the example is marked in the docs"
    work = suite.root / "trainer"
    work.mkdir()
    (work / "train.py").write_text(code.group(1))
    env = {**os.environ, "CERTIFIED_CONFIG": str(suite.pki.client)}
    run = subprocess.run([sys.executable, "train.py"], cwd=work, env=env, capture_output=True,
                         text=True, timeout=240)  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert [line.split(", loss")[0] for line in lines] == [
        f"epoch {e}: 64 events" for e in range(3)
    ], run.stdout
    assert len([p for p in (work / "lclstream-cache").iterdir() if p.name[0] != "."]) == 1
    assert [r for r in suite.requests_from("cn:client") if r.startswith("POST")] == [
        "POST /transfers"
    ]


def buffer_pid(out_url: str) -> int:
    """The pid of the nngstream buffer serving `out_url` (started by this test's suite)."""
    from pathlib import Path

    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"nngstream") for a in args[:2]) and out_url.encode() in args:
            return int(proc.name)
    raise AssertionError(f"no nngstream process serves {out_url}")


def test_a_broken_stream_raises_through_the_dataloader(suite, fresh):
    """The buffer dies (SIGKILL) mid-stream: no end message reaches the workers, which
    raise; DataLoader re-raises in the loop (TransferFailed once the service marks the
    transfer failed, else the StreamBroken message)."""
    import os
    import signal

    from torch.utils.data import DataLoader

    from lclstream_api.client import TransferFailed
    from lclstream_api.client.torch import StreamDataset

    cfg = pipeline(4000, rate_hz=50)
    ds = StreamDataset(cfg, certified=suite.pki.client, producers=2)
    it = iter(DataLoader(ds, batch_size=4, multiprocessing_context=fresh, num_workers=2))
    assert next(it)["frames"].shape == (4, 2, 64, 64)
    os.kill(buffer_pid(ds.source.urls[0]), signal.SIGKILL)
    with pytest.raises((TransferFailed, RuntimeError)) as err:
        for _ in it:
            pass
    assert "stream broken" in str(err.value) or "failed" in str(err.value), err.value
    del err, it  # the traceback holds the iterator: drop both, so its workers shut down
    gc.collect()
    ds.close()
