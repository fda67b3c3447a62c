"""psik fixtures: a callback receiver over mTLS, a psik config, the SLURM test cluster."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.servers import start_certified_server

from .helpers import job_processes, read_jsonl, wait_until
from .slurm import slurm_cluster  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Receiver:
    url: str  # the callback URL (POST)
    secret: str
    log: Path

    def received(self) -> list[dict]:
        return read_jsonl(self.log)

    def wait_for(self, jobid: str, state: str, timeout: float = 60) -> list[dict]:
        """Callbacks of `jobid` once one with `state` has arrived."""

        def mine() -> list[dict] | None:
            rows = [r for r in self.received() if r["jobid"] == jobid]
            return rows if any(r["state"] == state for r in rows) else None

        return wait_until(mine, timeout, f"callback {state} of job {jobid}")


def start_receiver(spawn, pki, tmp_path: Path, fail_first: int = 0, name: str = "receiver"):
    log = tmp_path / f"{name}.jsonl"
    secret = f"s3cret-{name}"
    env = {
        "PSIK_RECEIVER_SECRET": secret,
        "PSIK_RECEIVER_LOG": str(log),
        "PSIK_RECEIVER_FAIL_FIRST": str(fail_first),
    }
    _proc, url = start_certified_server(
        spawn, pki.server, "tests.psik.receiver:app", name=name, env=env
    )
    pki.add_service(pki.client, name, url)
    return Receiver(url=f"{url}/cb", secret=secret, log=log)


@pytest.fixture
def receiver(spawn, pki, tmp_path) -> Receiver:
    """A real HTTPS (mTLS) callback receiver that only accepts valid signatures."""
    return start_receiver(spawn, pki, tmp_path)


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
