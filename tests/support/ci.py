"""Tests whose tool is absent: a skip on a developer's machine, a failure in CI (CI=true).

The one place this rule lives; every "needs X" check in the suite goes through it."""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import NoReturn

import pytest


def unavailable(reason: str, enable: str) -> NoReturn:
    """Skip with `reason` and how to `enable` the test; in CI fail instead."""
    message = f"{reason}; to run this test: {enable}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI must run it)", pytrace=False)
    pytest.skip(message)


def require(available: bool, what: str, how: str) -> None:
    """Go on if `available`; otherwise `unavailable(what ...)`."""
    if not available:
        unavailable(f"{what} not available", how)


def require_executable(name: str, install: str, dirs: tuple[str, ...] = ()) -> str:
    """The path of program `name` (on PATH or in `dirs`), or `unavailable` saying how to
    `install` it."""
    path = shutil.which(name) or next(
        (p for d in dirs if os.access(p := os.path.join(d, name), os.X_OK)), None
    )
    if path is None:
        unavailable(f"{name} not installed", install)
    return path


def require_module(module: str, package: str) -> None:
    """Go on if Python `module` (dotted names too) imports; otherwise `unavailable`,
    saying to install PyPI `package`."""
    try:
        found = importlib.util.find_spec(module.split(".")[0]) is not None
        if found and "." in module:
            importlib.import_module(module)
    except ImportError:
        found = False
    if not found:
        unavailable(f"Python module {module} not installed", f"pip install {package}")
