"""psik fixtures: a job-callback receiver over mTLS, a psik config, the SLURM test cluster."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from certified import Certified
from psik.jobdir import JobStore
from tests.support.pki import Pki
from tests.support.procs import Proc, ProcessSupervisor
from tests.support.receiver import Receiver
from tests.support.servers import start_psik_api

from .helpers import job_processes, wait_until
from .slurm import slurm_cluster  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]


@dataclass
class JobReceiver:
    """The shared webhook receiver, seen as a sink of psik job callbacks."""

    rx: Receiver
    url: str  # the callback URL (POST)
    secret: str

    def received(self) -> list[dict]:
        """Accepted callbacks, each with the client `identity` and its request number."""
        with self.rx.lock:
            reqs = list(self.rx.requests)
        return [
            {
                **json.loads(r["body"]),
                "identity": r["identity"],
                "attempt": n,
                "tag": r["headers"].get("x-test-tag"),  # a JobSpec cb_headers entry, if sent
            }
            for n, r in enumerate(reqs, start=1)
            if not r["refused"]
        ]

    def wait_for(self, jobid: str, state: str, timeout: float = 60) -> list[dict]:
        """Callbacks of `jobid` once one with `state` has arrived."""

        def mine() -> list[dict] | None:
            rows = [r for r in self.received() if r["jobid"] == jobid]
            return rows if any(r["state"] == state for r in rows) else None

        return wait_until(mine, timeout, f"callback {state} of job {jobid}")


def start_receiver(pki, fail_first: int = 0, name: str = "receiver") -> JobReceiver:
    """An mTLS receiver (as cn:server) checking signatures; cn:client knows it as `name`."""
    secret = f"s3cret-{name}"
    rx = Receiver(Certified(pki.server), fail_first=fail_first, secret=secret)
    pki.add_service(pki.client, name, rx.base)
    return JobReceiver(rx, rx.url, secret)


@pytest.fixture
def receiver(pki):
    """A real HTTPS (mTLS) callback receiver that only accepts valid signatures."""
    jr = start_receiver(pki)
    yield jr
    jr.rx.close()


@dataclass
class Api:
    """A running `psik-api serve` (identity cn:server) and what tests need around it."""

    url: str
    root: Path
    store: JobStore
    receiver: JobReceiver  # mTLS, known to psik-api as `https://receiver/...`
    owner: httpx.Client  # cn:client
    other: httpx.Client  # cn:other
    proc: Proc
    pki: Pki
    exit_code: int | None = None

    def fresh_client(self, identity: Path) -> httpx.Client:
        """A client opening a new connection per request (no keep-alive to race with the
        server's idle timeout when the machine is saturated)."""
        limits = httpx.Limits(max_keepalive_connections=0)
        return Certified(identity).client("https://psik", timeout=60, limits=limits)


@contextmanager
def running_api(
    root: Path, psik: dict, settings: dict | None = None, secret: str = "api-secret"
) -> Iterator[Api]:
    """psik-api with jobs under root/jobs and `psik` merged into its psik settings;
    stopped (SIGTERM) on exit, its exit code in `exit_code`."""
    from tests.support.pki import make_pki

    pki = make_pki(root / "pki")
    (root / "logs").mkdir()
    sup = ProcessSupervisor(root / "logs")
    rx = Receiver(Certified(pki.server), secret=secret)
    pki.add_service(pki.server, "receiver", rx.base)  # psik-api calls back as cn:server
    env = {"PYTHONPATH": str(REPO)}
    proc, url = start_psik_api(sup, pki.server, root, psik=psik, env=env, settings=settings)
    for ident in (pki.client, pki.other):
        pki.add_service(ident, "psik", url)
    owner = Certified(pki.client).client("https://psik", timeout=30)
    other = Certified(pki.other).client("https://psik", timeout=30)
    receiver = JobReceiver(rx, "https://receiver/callback", secret)
    api = Api(url, root, JobStore(root / "jobs"), receiver, owner, other, proc, pki)
    try:
        yield api
    finally:
        owner.close()
        other.close()
        api.exit_code = proc.stop(grace=20)  # SIGTERM: uvicorn drains, then exits 0
        sup.stop_all()
        rx.close()


def write_config(path: Path, prefix: Path, certified: Path | None, **extra) -> Path:
    doc = {
        "prefix": str(prefix),
        "kill_grace": 1.0,
        "callback": {"timeout": 5, "first_delay": 0.1, "max_delay": 1, "give_up_after": 3},
        "backends": {"default": {"type": "local"}, "slurm": {"type": "slurm"}},
        **extra,
    }
    if certified is not None:
        doc["certified"] = str(certified)
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def psik_config(tmp_path, pki) -> Path:
    """A psik.yaml: jobs under tmp_path/jobs, callbacks as identity cn:client."""
    return write_config(tmp_path / "psik.yaml", tmp_path / "jobs", pki.client)


@pytest.fixture(autouse=True)
def _repo_on_pythonpath(monkeypatch):
    """Job wrappers run with cwd = their job folder; make sure they import this checkout.

    (An editable install made before a package had its __init__.py maps it as a
    namespace package; with the repo on PYTHONPATH the checkout's code always wins.)
    """
    old = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{REPO}{os.pathsep}{old}" if old else str(REPO))


@pytest.fixture(autouse=True)
def _no_orphans(tmp_path):
    """Fail any test that leaves a job process behind (and kill it)."""
    yield
    try:
        wait_until(lambda: not job_processes(tmp_path), 15, "job processes to exit")
    except AssertionError:
        left = job_processes(tmp_path)
        desc = [f"{p.pid} {' '.join(p.cmdline())}" for p in left]
        for proc in left:
            proc.kill()
        pytest.fail(f"orphaned job processes: {desc}")
