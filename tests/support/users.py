"""Real UNIX test users (created with useradd, removed afterwards) and sudoers rules.

Needs root, useradd and sudo: outside CI the tests skip without them, in CI they fail
(tests.support.ci.require).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .ci import require

SUDOERS_D = Path("/etc/sudoers.d")


def require_user_admin() -> None:
    """Skip (fail in CI) unless this process can create users and sudo is installed."""
    ok = os.geteuid() == 0 and all(shutil.which(c) for c in ("useradd", "userdel", "sudo"))
    require(
        ok and SUDOERS_D.is_dir(),
        "creating UNIX users (root, useradd) and sudo",
        "run the tests as root with sudo installed: bash deploy/privilege/install.sh",
    )


@contextmanager
def unix_users(
    *logins: str, system: tuple[str, ...] = ()
) -> Iterator[dict[str, pwd.struct_passwd]]:
    """Create `logins` (ordinary uids) and `system` (uids below 1000); yield their
    passwd entries; delete them (and their groups) on exit."""
    made: list[str] = []
    try:
        for login in (*logins, *system):
            extra = ["--system"] if login in system else []
            subprocess.run(
                [
                    "useradd",
                    "--no-create-home",
                    "--shell",
                    "/bin/sh",
                    "--user-group",
                    *extra,
                    login,
                ],
                check=True,
                capture_output=True,
            )
            made.append(login)
        yield {login: pwd.getpwnam(login) for login in made}
    finally:
        for login in made:
            subprocess.run(["userdel", login], check=False, capture_output=True)


@contextmanager
def sudoers_rule(name: str, text: str) -> Iterator[Path]:
    """Install `text` as /etc/sudoers.d/NAME after `visudo -c` accepts it; remove on exit."""
    path = SUDOERS_D / name
    tmp = SUDOERS_D / f".{name}.tmp"
    tmp.write_text(text)
    try:
        check = subprocess.run(["visudo", "-cf", str(tmp)], capture_output=True, text=True)
        if check.returncode != 0:
            raise AssertionError(f"visudo refuses the rule: {check.stdout}{check.stderr}\n{text}")
        tmp.chmod(0o440)
        os.replace(tmp, path)
        yield path
    finally:
        tmp.unlink(missing_ok=True)
        path.unlink(missing_ok=True)


def _world_usable(path: Path) -> bool:
    """Whether any user can reach (and run or read) `path`: every folder on the way
    searchable by others, the path itself readable or executable by them."""
    path = path.resolve()
    if not path.exists() or path.stat().st_mode & 0o005 == 0:
        return False
    return all(p.stat().st_mode & 0o001 for p in path.parents)


def shared_python(folder: Path) -> Path:
    """A Python interpreter every user can run, with this checkout's packages.

    Jobs run as their users, so the interpreter psik-api starts them with must be
    reachable by them. If the test venv's is (and its standard library), it is used;
    otherwise (here it links into root's 0700 home) this builds, under `folder` (which
    must be world-readable), a venv from the system's Python of the same version that
    loads the test venv's site-packages (same ABI).
    """
    import site
    import sys

    stdlib = Path(sys.base_prefix) / "lib"
    if all(_world_usable(p) for p in (Path(sys.executable), stdlib, Path(sys.prefix))):
        return Path(sys.executable)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    system = Path(f"/usr/bin/python{version}")
    require(
        system.is_file(),
        f"a system Python {version} that job users can run",
        f"install python{version} from Debian (the test venv's interpreter is {sys.executable})",
    )
    venv = folder / "py"
    subprocess.run([str(system), "-m", "venv", "--without-pip", str(venv)], check=True)
    packages = [p for p in site.getsitepackages() if p.startswith(sys.prefix)]
    target = venv / "lib" / f"python{version}" / "site-packages" / "checkout.pth"
    target.write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in packages))
    return venv / "bin" / "python"
