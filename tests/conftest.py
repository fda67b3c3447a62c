"""Fixtures shared by every test package (see tests/support/)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support.ports import free_port as _free_port
from tests.support.procs import ProcessSupervisor

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True, scope="session")
def _venv_on_path():
    """Make the venv's console scripts (and mpirun) visible to subprocesses."""
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{old}"
    yield
    os.environ["PATH"] = old


@pytest.fixture
def free_port():
    """A callable returning a fresh free TCP port on 127.0.0.1."""
    return _free_port


@pytest.fixture
def spawn(tmp_path):
    """Start subprocesses (own session, output in tmp files); all killed at teardown."""
    logdir = tmp_path / "proc-logs"
    logdir.mkdir(exist_ok=True)
    sup = ProcessSupervisor(logdir)
    yield sup
    sup.stop_all()


@pytest.fixture
def pki(tmp_path):
    """A throwaway PKI: a server identity and a client identity that trust each other."""
    from tests.support.pki import make_pki

    return make_pki(tmp_path / "pki")
