"""schemathesis (from PyPI) fuzzes psik-api over mTLS with a client certificate, every
phase: not one server error. Jobs the fuzzer creates run on the local backend with a
PATH holding only the venv (random scripts find no system programs to run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from certified.layout import Layout
from tests.support.ci import require
from tests.support.procs import ProcessSupervisor
from tests.support.servers import start_psik_api

from .conftest import REPO
from .helpers import job_processes, wait_until

PHASES = "examples,coverage,fuzzing,stateful"


@pytest.mark.timeout(900)
def test_schemathesis_finds_no_server_error(tmp_path, pki):
    cli = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    require(Path(cli).exists(), "schemathesis", "pip install -e '.[test]'")
    sup = ProcessSupervisor(tmp_path)
    venv_bin = str(Path(sys.executable).parent)
    proc, url = start_psik_api(
        sup,
        pki.server,
        tmp_path,
        psik={"kill_grace": 1.0},
        env={"PYTHONPATH": str(REPO), "PATH": venv_bin},
    )
    client = Layout(pki.client)
    report = tmp_path / "junit.xml"
    cmd = [
        cli, "run", f"{url}/openapi.json",
        "--phases", PHASES,
        "--checks", os.environ.get("PSIK_SCHEMATHESIS_CHECKS", "not_a_server_error"),
        "--request-cert", str(client.id_cert),
        "--request-cert-key", str(client.id_key),
        "--tls-verify", str(Layout(pki.server).ca_cert),
        "--max-examples", "25",
        "--seed", "8",
        "--workers", "1",
        "--generation-database", "none",
        "--report", "junit", "--report-junit-path", str(report),
    ]  # fmt: skip
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=840, cwd=tmp_path)
        print(" ".join(cmd[1:]))
        print(out.stdout[-3000:])
        assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
        assert "Server error" not in out.stdout
        assert proc.popen.poll() is None, "psik-api died under the fuzzer"
    finally:
        wait_until(lambda: not job_processes(tmp_path), 120, "fuzzed jobs to finish")
        sup.stop_all()
