"""Missing tools: a skip on a developer's machine, a failure in CI (CI=true)."""

from __future__ import annotations

import os

import pytest


def require(available: bool, what: str, how: str) -> None:
    """Skip the test unless `available`; under CI=true fail instead, so CI never passes
    by skipping. `how` says how to enable the test."""
    if available:
        return
    msg = f"{what} not available ({how})"
    if os.environ.get("CI") == "true":
        pytest.fail(msg + " -- CI must run this test")
    pytest.skip(msg)
