"""External programs a test needs: skipped where missing, except in CI where that fails."""

from __future__ import annotations

import os
import shutil

import pytest


def require_executable(name: str, install: str) -> str:
    """The path of `name`; outside CI a missing program skips the test with `install`
    (how to get it), in CI (CI=true) it fails the test: CI must run everything."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} not installed ({install})"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " -- CI must run this test")
        pytest.skip(msg)
    return path
