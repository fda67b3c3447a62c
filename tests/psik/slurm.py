"""The "needs SLURM" fixture: a single-node cluster from deploy/slurm/cluster.sh.

Other test packages can use it too:  `from tests.psik.slurm import slurm_cluster`
in their conftest.py. Outside CI a machine without SLURM skips; in CI (CI=true) fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.ci import require
from tests.support.ports import free_port

CLUSTER = Path(__file__).resolve().parents[2] / "deploy" / "slurm" / "cluster.sh"


def _slurm_installed() -> bool:
    return all(
        shutil.which(cmd) or Path(f"/usr/sbin/{cmd}").exists()
        for cmd in ("sbatch", "scancel", "scontrol", "slurmctld", "slurmd")
    )


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running single-node SLURM cluster (deploy/slurm/cluster.sh); SLURM_CONF is set.

    Outside CI a machine without SLURM skips; in CI (CI=true) that is a failure.
    """
    require(_slurm_installed(), "SLURM", "sudo bash deploy/slurm/install.sh")
    folder = tmp_path_factory.mktemp("slurm")
    ports = [str(free_port()), str(free_port())]
    out = subprocess.run(
        ["bash", str(CLUSTER), "start", str(folder), *ports],
        capture_output=True,
        text=True,
        timeout=90,
    )
    if out.returncode != 0:
        pytest.fail(f"cannot start the SLURM test cluster:\n{out.stdout}\n{out.stderr}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    yield folder
    subprocess.run(["bash", str(CLUSTER), "stop", str(folder)], timeout=60, check=False)
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old
