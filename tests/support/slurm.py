"""A single-node SLURM cluster (deploy/slurm/cluster.sh) in a folder the caller chooses:
for tests whose jobs run as other users, who must be able to read its slurm.conf (the
session fixture `tests.psik.slurm.slurm_cluster` lives under root's private tmp)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .ci import require
from .ports import free_port

CLUSTER = Path(__file__).resolve().parents[2] / "deploy" / "slurm" / "cluster.sh"


def slurm_installed() -> bool:
    return all(
        shutil.which(cmd) or Path(f"/usr/sbin/{cmd}").exists()
        for cmd in ("sbatch", "scancel", "scontrol", "slurmctld", "slurmd")
    )


@contextmanager
def slurm_cluster_in(folder: Path) -> Iterator[Path]:
    """Start a cluster whose files live in `folder` (world-readable if its parents are);
    yield its slurm.conf; stop it (cancelling every job left) on exit. Without SLURM:
    skip, or fail in CI."""
    require(slurm_installed(), "SLURM", "sudo bash deploy/slurm/install.sh")
    ports = [str(free_port()), str(free_port())]
    out = subprocess.run(
        ["bash", str(CLUSTER), "start", str(folder), *ports],
        capture_output=True,
        text=True,
        timeout=90,
    )
    if out.returncode != 0:
        pytest.fail(f"cannot start the SLURM test cluster:\n{out.stdout}\n{out.stderr}")
    try:
        yield folder / "slurm.conf"
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop", str(folder)], timeout=60, check=False)
