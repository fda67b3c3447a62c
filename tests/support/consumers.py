"""Gate tests on the field's own consumer programs: skip outside CI (saying how to enable
the test), fail in CI (`CI=true`), where `.ci/run` installs every consumer."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest


def require(available: bool, what: str, how: str) -> None:
    """Skip (or, with CI=true, fail) unless `available`; `how` says how to get `what`."""
    if available:
        return
    message = f"{what} is not available; {how}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: this test must run in CI)")
    pytest.skip(message)


def require_module(module: str, package: str) -> None:
    """The Python `module` (from PyPI `package`) must be importable."""
    found = importlib.util.find_spec(module.split(".")[0]) is not None
    if found and "." in module:
        try:
            importlib.import_module(module)
        except ImportError:
            found = False
    require(found, f"Python module {module}", f"install it with `pip install {package}`")


def require_program(name: str, *extra_dirs: str, how: str) -> str:
    """The path of program `name` (on PATH or in `extra_dirs`)."""
    path = shutil.which(name) or next(
        (p for d in extra_dirs if os.access(p := os.path.join(d, name), os.X_OK)), None
    )
    require(path is not None, f"program {name}", how)
    assert path is not None
    return path
