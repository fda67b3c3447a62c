"""lclstream-api through the real stack: mTLS everywhere, real psik-api (local backend),
real nngstream buffers, real `mpirun -n 2 lclstreamer`, the real `lclstream` CLI.

Topology: psik-api and lclstream-api both run as the `server` identity (each trusts it
as a client); psik-api may call back only to the nickname `lclstream`; buffers sign their
metrics callbacks with the same identity. Users are `cn:client` and `cn:other`.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (bitshuffle filter for reading)
import httpx
import numpy as np
import pytest
import yaml

from certified import Certified
from lclstream_api.store import Store
from tests.support.ports import free_port
from tests.support.servers import start_lclstream_api, start_psik_api

pytestmark = pytest.mark.timeout(240)


def pipeline(events: int, rate_hz: float | None = None, path: str | None = None) -> dict:
    source: dict = {"type": "synthetic", "number_of_events": events, "seed": 3,
                    "detectors": {"det": {"shape": [2, 64, 64]}}}  # fmt: skip
    if rate_hz:
        source["rate_limit_hz"] = rate_hz
    if path:
        source = {"type": "hdf5", "files": [path], "fields": {"det": "/data"}}
    return {
        "source_identifier": "synthetic:e2e",
        "skip_incomplete_events": True,
        "event_source": source,
        "data_sources": {"frames": {"type": "detector", "source": "det"},
                         "index": {"type": "event_index"}},
        "processing_pipeline": {"type": "batch", "batch_size": 4},
        "data_serializer": {"type": "hdf5", "compression": "bitshuffle_lz4",
                            "fields": {"frames": "/data/frames", "index": "/data/index"}},
    }  # fmt: skip


class Suite:
    def __init__(self, pki, spawn, root: Path, allowed: list[str]) -> None:
        self.pki, self.spawn, self.root = pki, spawn, root
        self.port = free_port()
        pki.add_service(pki.server, "lclstream", f"https://127.0.0.1:{self.port}")
        self.psik, psik_url = start_psik_api(
            spawn, pki.server, root, psik={"kill_grace": 2.0, "callback": {"allowed": allowed}}
        )
        pki.add_service(pki.server, "psik", psik_url)
        for user in (pki.client, pki.other):
            pki.add_service(user, "lclstream", f"https://127.0.0.1:{self.port}")
        self.start()

    def start(self) -> None:
        self.api, self.url, self.cfg = start_lclstream_api(
            self.spawn, self.pki.server, self.root, self.port
        )

    def client(self, who: Path | None = None) -> httpx.Client:
        return Certified(who or self.pki.client).client("https://lclstream", timeout=60)

    def lclstream(self, *args: str, who: Path | None = None, **kw) -> subprocess.CompletedProcess:
        cmd = ["lclstream", *args, "--config", str(who or self.pki.client)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=180, **kw)

    def wait_final(self, client: httpx.Client, tid: str, timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doc = client.get(f"/transfers/{tid}").json()
            if doc["state"] in ("completed", "failed", "canceled"):
                return doc
            time.sleep(0.2)
        raise AssertionError(f"transfer {tid} still {doc['state']} after {timeout}s: {doc}")

    def leased(self, tid: str) -> list[int]:
        store = Store(self.root / "lclstream-api" / "transfers.db")
        try:
            return store.leased(tid)
        finally:
            store.close()


@pytest.fixture
def suite(pki, spawn, tmp_path):
    return Suite(pki, spawn, tmp_path, ["lclstream"])


def read_indexes(dest: Path) -> list[np.ndarray]:
    out = []
    for path in sorted(dest.rglob("*.msg")):
        with h5py.File(io.BytesIO(path.read_bytes()), "r") as f:
            out.append(f["/data/index"][()])
    return out


def check_complete(suite: Suite, events: int, buffers: int) -> None:
    cfg = suite.root / "stream.yaml"
    cfg.write_text(yaml.safe_dump(pipeline(events)))
    dest = suite.root / "received"
    got = suite.lclstream(
        "get", str(cfg), "--producers", "2", "--buffers", str(buffers), "--consumers", "2",
        "--out", str(dest),
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    summary = json.loads(got.stdout)
    assert summary["state"] == "completed" and summary["events"] == events, summary
    assert summary["lost"] == 0 and summary["duplicates"] == 0
    per_consumer = [read_indexes(d) for d in sorted(dest.iterdir())]
    assert len(per_consumer) == 2 and all(per_consumer), "both consumers received batches"
    seen = np.concatenate([i for c in per_consumer for i in c])
    assert sorted(seen.tolist()) == list(range(events))  # every event exactly once
    with suite.client() as client:
        doc = client.get(f"/transfers/{summary['transfer']}").json()
    assert doc["state"] == "completed"
    assert len(doc["urls"]) == buffers
    assert {j["state"] for j in doc["jobs"].values()} == {"completed"}
    assert len(doc["jobs"]) == buffers + 1
    assert [t["new"] for t in doc["transitions"]] == ["streaming", "draining", "completed"]
    assert suite.leased(summary["transfer"]) == []  # ports released


def test_every_event_once_across_two_consumers(suite):
    check_complete(suite, events=96, buffers=1)


def test_two_buffers(suite):
    check_complete(suite, events=96, buffers=2)
