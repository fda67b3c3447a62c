"""Skip a test whose tool is absent, except in CI (CI=true), where that is a failure."""

from __future__ import annotations

import os

import pytest


def unavailable(reason: str, enable: str) -> None:
    """Skip with `reason` and how to `enable` the test; in CI fail instead (never returns)."""
    message = f"{reason}; to run this test: {enable}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI must run it)", pytrace=False)
    pytest.skip(message)
