"""The Python API through the real stack (mTLS, psik-api, nngstream, `mpirun -n 2
lclstreamer`): `stream()` and the client cache, and `lclstream get --cache`.

The reference arrays come from running the same deterministic synthetic configuration
locally with lclstreamer's file handler (the source's own output)."""

from __future__ import annotations

import gc
import json
import logging
import subprocess
import tarfile

import hdf5plugin  # noqa: F401  (bitshuffle filter for reading)
import numpy as np
import pytest
import yaml

from lclstream_api.client import CacheError, ClientError, TransferFailed, pull, stream
from tests.support.suite import Suite, assert_same, pipeline, source_events

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def suite(pki, spawn, tmp_path):
    return Suite(pki, spawn, tmp_path, ["lclstream"])


def cache_cmd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["lclstream", "cache", *args], capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def by_event(batches) -> dict[int, dict[str, np.ndarray]]:
    out: dict[int, dict[str, np.ndarray]] = {}
    for b in batches:
        for ev in b.events():
            idx = int(ev["index"])
            assert idx not in out, f"event {idx} twice"
            out[idx] = ev
    return out


def test_stream_yields_every_event_once_equal_to_the_source(suite):
    cfg = pipeline(48)
    want = source_events(cfg, suite.root)
    with stream(cfg, certified=suite.pki.client, producers=2) as s:
        batches = list(s)
    assert s.final is not None and s.final.state.value == "completed"
    assert s.received.duplicates == 0 and s.received.events == 48
    assert {b["frames"].dtype for b in batches} == {np.dtype("float32")}
    assert_same(by_event(batches), want)
    with pytest.raises(ClientError, match="iterated once"):
        iter(s)


def test_stream_two_buffers_acked(suite):
    cfg = pipeline(40)
    s = stream(cfg, certified=suite.pki.client, producers=2, buffers=2, delivery="acked")
    assert len(s.urls) == 2
    got = by_event(s)
    assert sorted(got) == list(range(40))
    assert s.final.state.value == "completed"


def test_closing_early_or_dropping_the_stream_cancels_the_transfer(suite):
    cfg = pipeline(4000, rate_hz=50)
    s = stream(cfg, certified=suite.pki.client, producers=2)
    it = iter(s)
    first = next(it)
    assert first.n_events == 4 and first["frames"].shape == (4, 2, 64, 64)
    it.close()  # closing the iterator early: DELETE
    unused = stream(cfg, certified=suite.pki.client, producers=2)
    never_iterated = unused.transfer.id
    del unused  # dropped before it was iterated: DELETE at garbage collection
    gc.collect()
    suite.assert_canceled_by_user([s.transfer.id, never_iterated])
    assert f"DELETE /transfers/{never_iterated}" in suite.requests_from("cn:client")


def test_a_failed_transfer_raises_with_the_reason(suite):
    cfg = pipeline(10)
    cfg["event_source"] = {"type": "hdf5", "files": ["/nonexistent/run7.h5"],
                           "datasets": {"det": "/data"}}  # fmt: skip
    cache = suite.root / "cache"
    with pytest.raises(TransferFailed) as err:
        for _ in stream(cfg, certified=suite.pki.client, producers=2, cache=cache):
            pass
    assert "failed" in str(err.value) and "/nonexistent/run7.h5" in str(err.value)
    assert err.value.detail.state.value == "failed"
    assert list(cache.iterdir()) == []  # no entry, no temporary directory left


def test_pull_joins_a_transfer_that_stream_started(suite):
    """Two consumers of one transfer: the process that started it and a `pull` (here a
    thread); between them every event once. Neither stores a partial cache entry."""
    import threading

    cfg = pipeline(64, rate_hz=40)
    s = stream(cfg, certified=suite.pki.client, producers=2, cache=suite.root / "cache")
    other: list = []
    t = threading.Thread(target=lambda: other.extend(pull(s.urls, config=s.config)))
    t.start()
    mine = list(s)
    t.join(120)
    both = by_event([*mine, *other])
    assert sorted(both) == list(range(64))
    assert mine and other, "both consumers received batches"
    assert s.cache_entry is None  # only part of the dataset came here: not cached


def test_cache_replays_without_the_server(suite, caplog):
    cfg = pipeline(32)
    cache = suite.root / "cache"
    first = stream(cfg, certified=suite.pki.client, producers=2, cache=cache)
    assert not first.from_cache
    got1 = by_event(first)
    assert first.cache_entry is not None and first.cache_entry.manifest.events == 32
    before = suite.requests_from("cn:client")

    with caplog.at_level(logging.INFO, logger="lclstream.client"):
        again = stream(cfg, certified=suite.pki.client, producers=2, cache=cache)
    assert again.from_cache and again.transfer is None
    assert "from the cache" in caplog.text and "no request to the server" in caplog.text
    got2 = by_event(again)
    assert_same(got2, got1)
    # the CLI finds the same entry (same key) and writes it out, again without a request
    path = suite.root / "stream.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = suite.root / "replayed"
    got = suite.lclstream("get", str(path), "--cache", str(cache), "--out", str(out))
    assert got.returncode == 0, got.stderr
    assert "replayed from the cache" in got.stderr and "no request to the server" in got.stderr
    summary = json.loads(got.stdout)
    assert summary["from_cache"] == str(first.cache_entry.path) and summary["events"] == 32
    assert len(list(out.rglob("*.msg"))) == summary["batches"]
    assert suite.requests_from("cn:client") == before  # no request reached the server

    listed = cache_cmd("ls", "--cache", str(cache))
    assert listed.returncode == 0 and first.cache_entry.key in listed.stdout
    assert "32 events" in listed.stdout
    ok = cache_cmd("verify", "--cache", str(cache))
    assert ok.returncode == 0 and "ok (" in ok.stdout, ok.stderr

    # a corrupted batch: detected on replay and by verify, naming the file
    victim = first.cache_entry.path / first.cache_entry.manifest.batches[1].file
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=f"{victim}: corrupted"):
        list(stream(cfg, certified=suite.pki.client, cache=cache))
    bad = cache_cmd("verify", "--cache", str(cache))
    assert bad.returncode == 1 and f"{victim}: corrupted" in bad.stdout
    assert "1 problems in 1 cache entries" in bad.stderr
    gone = cache_cmd("rm", first.cache_entry.key[:12], "--cache", str(cache))
    assert gone.returncode == 0 and not first.cache_entry.path.exists()


def test_get_with_cache_stores_then_replays(suite):
    path = suite.root / "stream.yaml"
    path.write_text(yaml.safe_dump(pipeline(24)))
    cache = suite.root / "cache"
    got = suite.lclstream("get", str(path), "--cache", str(cache), "--out", str(suite.root / "a"))
    assert got.returncode == 0, got.stderr
    summary = json.loads(got.stdout)
    assert summary["cached"] and "stored in the cache" in got.stderr
    before = len(suite.requests_from("cn:client"))
    tar = suite.root / "again.tar"
    again = suite.lclstream("get", str(path), "--cache", str(cache), "--tar", str(tar))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["from_cache"] == summary["cached"]
    assert len(suite.requests_from("cn:client")) == before
    with tarfile.open(tar) as tf:
        assert len([m for m in tf.getmembers() if m.isfile()]) == summary["batches"]
