"""The whole suite on loopback for tests and benchmarks: psik-api and lclstream-api over
mTLS (both as the PKI's `server` identity), users `cn:client` and `cn:other`, and a
deterministic synthetic source (`pipeline`)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (bitshuffle, for source_events)
import httpx
import numpy as np
import yaml

from certified import Certified
from lclstream_api.store import Store

from .ports import free_port
from .servers import start_lclstream_api, start_psik_api


def pipeline(
    events: int,
    rate_hz: float | None = None,
    path: str | None = None,
    *,
    shape: tuple[int, ...] = (2, 64, 64),
    batch_size: int = 4,
    serializer: dict | None = None,
) -> dict:
    """A deterministic synthetic run (frames and event index), HDF5 batches by default."""
    source: dict = {"type": "synthetic", "number_of_events": events, "seed": 3,
                    "detectors": {"det": {"shape": list(shape)}}}  # fmt: skip
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
        "processing_pipeline": {"type": "batch", "batch_size": batch_size},
        "data_serializer": serializer or {
            "type": "hdf5", "compression": "bitshuffle_lz4",
            "fields": {"frames": "/data/frames", "index": "/data/index"}},
    }  # fmt: skip


class Suite:
    """psik-api (local backend) and lclstream-api as real processes under `root`; the
    PKI's client and other users trust lclstream-api as `lclstream`."""

    def __init__(
        self,
        pki,
        spawn,
        root: Path,
        allowed: list[str],
        psik_settings: dict | None = None,
        api_settings: dict | None = None,
    ) -> None:
        self.pki, self.spawn, self.root = pki, spawn, root
        self.api_settings = api_settings
        self.port = free_port()
        pki.add_service(pki.server, "lclstream", f"https://127.0.0.1:{self.port}")
        self.psik, self.psik_url = start_psik_api(
            spawn,
            pki.server,
            root,
            psik={"kill_grace": 2.0, "callback": {"allowed": allowed}},
            settings=psik_settings,
        )
        pki.add_service(pki.server, "psik", self.psik_url)
        for user in (pki.client, pki.other):
            pki.add_service(user, "lclstream", f"https://127.0.0.1:{self.port}")
        self.start()

    def start(self) -> None:
        self.api, self.url, self.cfg = start_lclstream_api(
            self.spawn, self.pki.server, self.root, self.port, self.api_settings
        )

    def requests_from(self, identity: str = "cn:client") -> list[str]:
        """ "METHOD /path" of every request lclstream-api's access log shows from
        `identity` (certified's JSON access lines on the service's stderr)."""
        import json

        out = []
        for line in self.api.stderr().splitlines():
            if not line.startswith("{"):
                continue
            doc = json.loads(line)
            if doc.get("logger") == "certified.access" and doc.get("client_identity") == identity:
                out.append(f"{doc['method']} {doc['path']}")
        return out

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

    def assert_canceled_by_user(self, transfer_ids: list[str]) -> None:
        """Each transfer ended `canceled` by its user, its producer job canceled."""
        with self.client() as client:
            for tid in transfer_ids:
                doc = self.wait_final(client, tid)
                assert doc["state"] == "canceled", doc
                assert doc["transitions"][-1]["source"] == "user"
                assert self.job_states(doc["jobs"])["producer"] == "canceled"

    def job_states(self, jobs: dict, timeout: float = 60) -> dict[str, str]:
        """Final state of each job, asked from psik-api (as the service's identity)."""
        out = {}
        with Certified(self.pki.server).client("https://psik", timeout=60) as psik:
            deadline = time.monotonic() + timeout
            for role, job in jobs.items():
                while (state := psik.get(f"/jobs/{job['jobid']}").json()["state"]) in (
                    "new", "queued", "active",
                ):  # fmt: skip
                    assert time.monotonic() < deadline, f"{role} still {state}"
                    time.sleep(0.2)
                out[role] = state
        return out

    def leased(self, tid: str) -> list[int]:
        store = Store(self.root / "lclstream-api" / "transfers.db")
        try:
            return store.leased(tid)
        finally:
            store.close()


def source_events(cfg: dict, root: Path) -> dict[int, dict[str, np.ndarray]]:
    """Event index -> fields, from the same configuration run locally into files."""
    local = {**cfg, "data_handlers": [{"type": "file", "directory": str(root / "ref")}]}
    path = root / "reference.yaml"
    path.write_text(yaml.safe_dump(local))
    subprocess.run(["mpirun", "-n", "2", "lclstreamer", "-c", str(path), "--no-progress"],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    fields = cfg["data_serializer"]["fields"]
    out = {}
    for f in sorted((root / "ref").glob("*.h5")):
        with h5py.File(f, "r") as h:
            cols = {name: h[p][()] for name, p in fields.items()}
        for i, idx in enumerate(cols["index"]):
            out[int(idx)] = {name: col[i] for name, col in cols.items()}
    return out


def assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for idx, ev in want.items():
        for name, arr in ev.items():
            np.testing.assert_array_equal(got[idx][name], arr, err_msg=f"{name} of {idx}")
