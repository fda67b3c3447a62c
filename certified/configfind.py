"""The suite's one configuration search order, for directories and files alike.

For a configuration NAME with environment variable VAR: the command-line flag, then
``$VAR``, then ``$VIRTUAL_ENV/etc/NAME``, then ``/etc/NAME``. A flag or variable that is
given wins even if the path does not exist (the caller reports it); of the other two the
first that exists wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def config_candidates(
    flag: str | os.PathLike | None, env_var: str, name: str, environ: Mapping[str, str]
) -> list[Path]:
    """Every place looked at, in order."""
    out: list[Path] = []
    if flag:
        out.append(Path(flag))
    if environ.get(env_var):
        out.append(Path(environ[env_var]))
    if environ.get("VIRTUAL_ENV"):
        out.append(Path(environ["VIRTUAL_ENV"]) / "etc" / name)
    out.append(Path("/etc") / name)
    return out


def find_config(
    flag: str | os.PathLike | None,
    env_var: str,
    name: str,
    environ: Mapping[str, str] | None = None,
    *,
    directory: bool = False,
) -> tuple[Path | None, bool]:
    """(the path to use or None, whether it was asked for explicitly by flag or env)."""
    environ = os.environ if environ is None else environ
    if flag or environ.get(env_var):
        return config_candidates(flag, env_var, name, environ)[0], True
    for path in config_candidates(None, env_var, name, environ):
        if path.is_dir() if directory else path.is_file():
            return path, False
    return None, False
