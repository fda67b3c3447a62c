"""Who a job runs as: the mapping from a request's identity to a UNIX login (pure, given
a user lookup), and the one privileged step (sudo) that starts a job's steps as that login.

A request from `uid:<login>` runs as `<login>`; a delegator (an operator-listed service
identity) may name a user in `X-On-Behalf-Of: uid:<login>`. Everything else is refused
with a reason the API returns as 403.
"""

from __future__ import annotations

import pwd
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import PsikError

#: the request header a delegator names the user with.
ON_BEHALF_OF = "X-On-Behalf-Of"


class Refused(PsikError):
    """The identity may not run a job (as that user); the message says why."""


@dataclass(frozen=True)
class Principal:
    """Whom a job belongs to and runs as."""

    owner: str  #: the identity that sees and controls the job (`uid:alice`)
    login: str | None  #: the UNIX login it runs as (None: the service's own account)
    delegated_by: str | None = None  #: the service identity that submitted it for `owner`


@dataclass(frozen=True)
class RunAsPolicy:
    """The operator's rules (psik-api settings run_as, min_uid, deny_logins, delegators)."""

    mode: str = "service"
    min_uid: int = 1000
    deny_logins: tuple[str, ...] = ("root",)
    delegators: tuple[str, ...] = ()


def _login_of(identity: str) -> str | None:
    return identity[4:] if identity.startswith("uid:") and len(identity) > 4 else None


def check_login(login: str, policy: RunAsPolicy, lookup: Callable[[str], int]) -> None:
    """Refuse a login that is denied, unknown, or below min_uid. `lookup` gives the uid
    (raising KeyError for an unknown login)."""
    if login in policy.deny_logins:
        raise Refused(f"login {login!r} is on the operator's deny list")
    try:
        uid = lookup(login)
    except KeyError:
        raise Refused(f"no UNIX login {login!r} on this host") from None
    if uid < policy.min_uid:
        raise Refused(f"login {login!r} has uid {uid}, below the minimum {policy.min_uid}")


def resolve(
    identity: str,
    on_behalf_of: str | None,
    policy: RunAsPolicy,
    lookup: Callable[[str], int],
) -> Principal:
    """Who a job submitted by `identity` (naming `on_behalf_of`, if given) belongs to and
    runs as; raise Refused with the reason otherwise."""
    owner, delegated_by = identity, None
    if on_behalf_of is not None:
        if identity not in policy.delegators:
            raise Refused(f"{identity} may not submit on behalf of others (not a delegator)")
        if _login_of(on_behalf_of) is None:
            raise Refused(f"{ON_BEHALF_OF} must name a user as uid:<login>, not {on_behalf_of!r}")
        owner, delegated_by = on_behalf_of, identity
    if policy.mode == "service":
        return Principal(owner, None, delegated_by)
    login = _login_of(owner)
    if login is None:
        raise Refused(
            f"{owner} is not a user (uid:<login>); with run_as caller only users, or a "
            f"delegator naming one in {ON_BEHALF_OF}, can submit jobs"
        )
    check_login(login, policy, lookup)
    return Principal(owner, login, delegated_by)


def uid_of(login: str) -> int:
    """The uid of a login (KeyError if there is none)."""
    return pwd.getpwnam(login).pw_uid


def login_of_uid(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def folder_login(path: Path) -> str | None:
    """The login owning a folder (a job's user: only root could have chowned it)."""
    return login_of_uid(path.stat().st_uid)


def via_sudo(sudo: str, login: str) -> list[str]:
    """The prefix that runs one command as `login` through the operator's sudoers rule
    (non-interactive: a missing rule fails at once instead of prompting)."""
    return [sudo, "-n", "-u", login, "--"]


def sudoers_rule(
    service_user: str,
    python: str,
    slurm: dict[str, str],
    deny_logins: Sequence[str],
    users_group: str | None = None,
) -> str:
    """The sudoers lines letting `service_user` run exactly the job steps as users."""
    runas = [f"%{users_group}"] if users_group else ["ALL"]
    runas += ["!root", "!#0", *(f"!{d}" for d in deny_logins if d != "root")]
    cmds = [f"{python} -m psik.wrapper *"]
    cmds += [
        f"{slurm['sbatch']} --parsable --hold *",
        f"{slurm['scontrol']} release *",
        f"{slurm['scancel']} *",
    ]
    esc = [c.replace(",", "\\,").replace(":", "\\:").replace("=", "\\=") for c in cmds]
    lines = [
        "# psik-api run_as caller: start job wrappers and SLURM jobs as the requesting user",
        "# (install with: visudo -f /etc/sudoers.d/psik-api)",
        f"Runas_Alias PSIK_USERS = {', '.join(runas)}",
        "Cmnd_Alias PSIK_JOB = " + ", ".join(esc),
        'Defaults!PSIK_JOB env_reset, env_keep += "SLURM_CONF", !requiretty',
        f"{service_user} ALL = (PSIK_USERS) NOPASSWD: PSIK_JOB",
        "",
    ]
    return "\n".join(lines)
