"""The "needs SLURM" session fixture: a single-node cluster (tests.support.slurm).

Other test packages can use it too:  `from tests.psik.slurm import slurm_cluster`
in their conftest.py. Outside CI a machine without SLURM skips; in CI (CI=true) fails.
"""

from __future__ import annotations

import os

import pytest

from tests.support.slurm import slurm_cluster_in


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running single-node SLURM cluster under root's tmp; SLURM_CONF is set."""
    folder = tmp_path_factory.mktemp("slurm")
    old = os.environ.get("SLURM_CONF")
    with slurm_cluster_in(folder) as conf:
        os.environ["SLURM_CONF"] = str(conf)
        try:
            yield folder
        finally:
            if old is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old
