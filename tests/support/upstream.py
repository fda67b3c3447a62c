"""Upstream packages from PyPI in their own virtualenvs (their names collide with ours).

`upstream_venv(name, requirements)` builds `.cache/upstream-venvs/<name>` under the
repository once (reused while the requirements are the same) and returns its bin
directory. Outside CI, a machine that cannot reach PyPI skips the test saying so; in CI
(CI=true) every such skip is a failure (`tests.support.ci.unavailable`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.ci import unavailable

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "upstream-venvs"


def upstream_venv(name: str, requirements: list[str], timeout: float = 420) -> Path:
    """The bin/ of a virtualenv holding `requirements` from PyPI (built once, then reused)."""
    digest = hashlib.sha256("\n".join([sys.version, *requirements]).encode()).hexdigest()[:12]
    root = CACHE / f"{name}-{digest}"
    ready = root / ".ready"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time (parallel test sessions)
        if ready.exists():
            return root / "bin"
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        try:
            out = subprocess.run(
                [str(root / "bin" / "pip"), "install", "-q", *requirements],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
            )
        except subprocess.TimeoutExpired:
            shutil.rmtree(root, ignore_errors=True)
            unavailable(
                f"pip install {' '.join(requirements)} took over {timeout:.0f} s",
                "rerun with a faster connection to PyPI",
            )
        if out.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "?"
            unavailable(
                f"cannot install {' '.join(requirements)} from PyPI: {last}",
                "give this machine network access to PyPI",
            )
        ready.touch()
    return root / "bin"


def upstream_env(bin_dir: Path, **extra: str) -> dict[str, str]:
    """An environment that runs the upstream venv's programs and none of ours."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CERTIFIED_CONFIG")}
    env["VIRTUAL_ENV"] = str(bin_dir.parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env
