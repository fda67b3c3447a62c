"""The identity -> UNIX login mapping and the sudoers rule (pure; the real users are in
test_privilege.py)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from psik.runas import Principal, Refused, RunAsPolicy, resolve, sudoers_rule, via_sudo

UIDS = {"alice": 1001, "bob": 1002, "daemon": 1, "root": 0, "svc": 999}
CALLER = RunAsPolicy("caller", 1000, ("root",), ("cn:lclstream-api",))
SERVICE = RunAsPolicy("service", 1000, ("root",), ("cn:lclstream-api",))


def lookup(login: str) -> int:
    return UIDS[login]


def test_a_user_runs_as_their_login():
    assert resolve("uid:alice", None, CALLER, lookup) == Principal("uid:alice", "alice")


@pytest.mark.parametrize(
    ("identity", "reason"),
    [
        ("uid:root", "deny list"),
        ("uid:mallory", "no UNIX login 'mallory'"),
        ("uid:daemon", "uid 1, below the minimum 1000"),
        ("uid:svc", "below the minimum"),
        ("cn:other", "not a user"),
        ("cn:lclstream-api", "not a user"),  # a delegator must name someone
        ("uid:", "not a user"),
    ],
)
def test_refused_with_the_reason(identity, reason):
    with pytest.raises(Refused, match=reason):
        resolve(identity, None, CALLER, lookup)


def test_deny_list_wins_over_a_high_uid():
    policy = RunAsPolicy("caller", 1000, ("root", "bob"), ())
    with pytest.raises(Refused, match="deny list"):
        resolve("uid:bob", None, policy, lookup)


def test_a_delegator_submits_for_a_user():
    who = resolve("cn:lclstream-api", "uid:alice", CALLER, lookup)
    assert who == Principal("uid:alice", "alice", "cn:lclstream-api")


@pytest.mark.parametrize("target", ["uid:root", "uid:daemon", "uid:mallory"])
def test_a_delegator_cannot_name_a_refused_user(target):
    with pytest.raises(Refused):
        resolve("cn:lclstream-api", target, CALLER, lookup)


@pytest.mark.parametrize("target", ["cn:other", "alice", "uid:", ""])
def test_a_delegator_must_name_a_user(target):
    with pytest.raises(Refused, match="uid:<login>"):
        resolve("cn:lclstream-api", target, CALLER, lookup)


@pytest.mark.parametrize("policy", [CALLER, SERVICE])
@pytest.mark.parametrize("identity", ["uid:bob", "cn:other", "cn:lclstream-api@evil"])
def test_only_delegators_may_name_a_user(policy, identity):
    with pytest.raises(Refused, match="not a delegator"):
        resolve(identity, "uid:alice", policy, lookup)


def test_service_mode_keeps_identities_and_runs_as_the_service():
    assert resolve("cn:other", None, SERVICE, lookup) == Principal("cn:other", None)
    assert resolve("uid:root", None, SERVICE, lookup) == Principal("uid:root", None)
    delegated = resolve("cn:lclstream-api", "uid:alice", SERVICE, lookup)
    assert delegated == Principal("uid:alice", None, "cn:lclstream-api")


def test_via_sudo_never_prompts():
    assert via_sudo("/usr/bin/sudo", "alice") == ["/usr/bin/sudo", "-n", "-u", "alice", "--"]


def test_sudoers_rule_allows_only_the_job_steps_and_never_root(tmp_path):
    slurm = {c: f"/usr/bin/{c}" for c in ("sbatch", "scontrol", "scancel")}
    rule = sudoers_rule("psik", "/opt/venv/bin/python", slurm, ["root", "admin"], "scientists")
    assert "Runas_Alias PSIK_USERS = %scientists, !root, !#0, !admin" in rule
    assert "/opt/venv/bin/python -m psik.wrapper *" in rule
    assert "/usr/bin/sbatch --parsable --hold *" in rule
    assert "psik ALL = (PSIK_USERS) NOPASSWD: PSIK_JOB" in rule
    if shutil.which("visudo"):  # the real parser agrees it is valid
        path = tmp_path / "rule"
        path.write_text(rule)
        out = subprocess.run(["visudo", "-cf", str(path)], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
